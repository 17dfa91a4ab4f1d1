//! What `examples/prometheus.rs` runs and `tests/prometheus.rs` scrapes: the Arith
//! server on tokio (rpcx-tokio) with [`MetricsHooks`], a client with the same hooks,
//! and metrics-exporter-prometheus serving the text format over HTTP on loopback.
#![allow(dead_code, unreachable_pub)]

use metrics::Recorder;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use rpcx_examples_common::{Args, ArithClient};
use rpcx_metrics::{MetricsHooks, ServerTotalsGauges};
use rpcx_tokio::{Client, ClientOptions, Server, ServerHandle};
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type BoxError = Box<dyn Error + Send + Sync>;

/// Histogram buckets of `*.duration`, in milliseconds.
pub const DURATION_BUCKETS_MS: &[f64] =
    &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];
/// Histogram buckets of `*.size`, in bytes.
pub const SIZE_BUCKETS_BYTES: &[f64] =
    &[0.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0];

/// The running setup.
pub struct Observed {
    /// The rpcx server (the hooks installed).
    pub server: ServerHandle,
    /// A client of it (the hooks installed).
    pub client: Client,
    /// Where the Prometheus text is served.
    pub metrics_addr: SocketAddr,
    /// Publishes the server's totals (`rpcx.server.*` gauges).
    pub totals: ServerTotalsGauges,
}

impl Observed {
    /// Refresh the `rpcx.server.*` gauges from the server's counters.
    pub fn publish_totals(&self) {
        self.totals.publish(&self.server.stats());
    }

    /// Close the client and shut the server down.
    pub async fn stop(self) {
        self.client.close().await;
        self.server.shutdown(Duration::from_secs(2)).await;
    }
}

/// A Prometheus recorder (histograms with buckets) whose HTTP listener serves on
/// `listen` (port 0: a free loopback port is picked). Call inside a tokio runtime: the
/// exporter runs as a task on it.
pub fn exporter(listen: SocketAddr) -> Result<(Arc<dyn Recorder + Send + Sync>, SocketAddr), BoxError> {
    let mut tries = 0;
    loop {
        let addr = if listen.port() == 0 { free_port(listen)? } else { listen };
        let built = PrometheusBuilder::new()
            .with_http_listener(addr)
            .set_buckets_for_metric(Matcher::Suffix("duration".into()), DURATION_BUCKETS_MS)?
            .set_buckets_for_metric(Matcher::Suffix("size".into()), SIZE_BUCKETS_BYTES)?
            .build();
        match built {
            Ok((recorder, serving)) => {
                tokio::spawn(serving);
                return Ok((Arc::new(recorder), addr));
            }
            // Another process took the port between our look and the bind: pick again.
            Err(e) if listen.port() == 0 && tries < 5 => {
                tries += 1;
                eprintln!("metrics listener on {addr}: {e}; trying another port");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn free_port(on: SocketAddr) -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind(on)?.local_addr()
}

/// Start the server and client with the hooks recording into a Prometheus exporter on
/// `listen`.
pub async fn start(listen: SocketAddr) -> Result<Observed, BoxError> {
    let (recorder, metrics_addr) = exporter(listen)?;
    // One value serves both sides; a process with one recorder would install it with
    // `metrics::set_global_recorder` and use `MetricsHooks::new()` as it is.
    let hooks = Arc::new(MetricsHooks::new().recorder(recorder.clone()));
    let totals = ServerTotalsGauges::new().recorder(recorder);
    totals.describe();
    let router = rpcx_examples_common::router(None).hook(hooks.clone());
    let server = Server::new(router).bind("tcp@127.0.0.1:0").await?;
    let client = Client::connect(server.address(), ClientOptions::default().hook(hooks)).await?;
    Ok(Observed { server, client, metrics_addr, totals })
}

/// One round of calls: `Arith.Mul` (a success), `Arith.Div` (no such method: an error)
/// and `Arith.Mul` as a oneway request.
pub async fn round(client: &Client, i: i64) -> Result<(), BoxError> {
    let reply = ArithClient::new(client).mul(Args { a: i, b: 6 }).await?;
    assert_eq!(reply.c, i * 6);
    let err = client.request("Arith", "Div").call::<_, rpcx_examples_common::Reply>(&Args { a: i, b: 2 }).await;
    assert!(err.as_ref().is_err_and(|e| e.remote().is_some()), "{:?}", err.err());
    client.request("Arith", "Mul").oneway(&Args { a: i, b: 7 }).await?;
    Ok(())
}

/// GET the Prometheus text from `addr` over HTTP/1.1.
pub async fn scrape(addr: SocketAddr) -> Result<String, BoxError> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8(buf)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of the HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("scrape answered {head}").into());
    }
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return dechunk(body);
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> Result<String, BoxError> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("bad chunk")?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).ok_or("short chunk")?);
        body = rest.get(n + 2..).ok_or("short chunk")?;
    }
}
