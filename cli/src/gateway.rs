//! `rpcx gateway`: the book's rpcx-gateway and agent. An HTTP server (the X-RPCX
//! gateway and JSON-RPC 2.0, as on every rpcx port) whose every request is forwarded,
//! with its service path, method, metadata, serialize type and payload as they came,
//! to upstream rpcx servers through an XClient: its fail mode and selector choose and
//! retry. rpcx clients (`tcp@`, `http@`, `ws@`) can use it as a proxy the same way.

use crate::{Failure, Outcome};
use clap::{Args, ValueEnum};
use rpcx_tokio::core::govern::{FailMode, Instance, MultiDiscovery, SelectMode};
use rpcx_tokio::core::wire::Message;
use rpcx_tokio::service::{Router, ServiceError};
use rpcx_tokio::{Server, XClient, XClientOptions};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// Listen address (port 0: any free port).
    #[arg(long, default_value = "tcp@127.0.0.1:9981")]
    addr: String,
    /// An upstream rpcx server (repeat for several): tcp@host:port, unix@/path, ...
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<String>,
    /// How a failed call is retried.
    #[arg(long, value_enum, default_value_t = Fail::Failover)]
    fail_mode: Fail,
    /// How an upstream is chosen.
    #[arg(long, value_enum, default_value_t = Select::Random)]
    select: Select,
    /// Per-call timeout towards the upstreams.
    #[arg(long, value_parser = crate::parse_duration, default_value = "10s")]
    timeout: Duration,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Fail {
    Failover,
    Failfast,
    Failtry,
    Failbackup,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Select {
    Random,
    Roundrobin,
    Weighted,
    Latency,
}

/// The router of a gateway: nothing registered, everything forwarded through `xc`
/// (response metadata and errors come back as the upstream sent them).
pub(crate) fn forwarding_router(xc: Arc<XClient>) -> Router {
    Router::new().fallback(move |ctx, payload| {
        let xc = xc.clone();
        async move {
            let mut msg = Message::request(
                ctx.serialize_type(),
                0,
                ctx.service_path_bytes().clone(),
                ctx.service_method_bytes().clone(),
            );
            msg.header.set_oneway(ctx.is_oneway());
            msg.metadata = ctx.metadata().clone();
            msg.payload = payload;
            match xc.send_raw(msg).await {
                Ok(Some(reply)) => {
                    for (k, v) in reply.metadata.iter() {
                        ctx.set_response_metadata(k.clone(), v.clone());
                    }
                    Ok(reply.payload)
                }
                Ok(None) => Ok(Default::default()),
                Err(e) => Err(ServiceError::new(e.remote().map_or_else(|| e.to_string(), |r| r.text.clone()))),
            }
        }
    })
}

pub(crate) async fn run(a: GatewayArgs) -> Outcome {
    crate::net::check_addr(&a.addr)?;
    for u in &a.upstreams {
        crate::net::check_addr(u)?;
    }
    let discovery = Arc::new(MultiDiscovery::new(a.upstreams.iter().map(|u| Instance::new(u.as_str(), ""))));
    let fail_mode = match a.fail_mode {
        Fail::Failover => FailMode::Failover,
        Fail::Failfast => FailMode::Failfast,
        Fail::Failtry => FailMode::Failtry,
        Fail::Failbackup => FailMode::Failbackup,
    };
    let select = match a.select {
        Select::Random => SelectMode::Random,
        Select::Roundrobin => SelectMode::RoundRobin,
        Select::Weighted => SelectMode::WeightedRoundRobin,
        Select::Latency => SelectMode::WeightedLatency,
    };
    let mut opts = XClientOptions { fail_mode, ..Default::default() }.select_mode(select);
    opts.client.call_timeout = Some(a.timeout);
    let xc = Arc::new(XClient::new("", discovery, opts));
    let server = Server::new(forwarding_router(xc))
        .bind(&a.addr)
        .await
        .map_err(|e| Failure::failed(format!("listen on {}: {e}", a.addr)))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.address());
        let _ = out.flush();
    }
    eprintln!("forwarding to {} ({:?}, {:?}); ctrl-c stops", a.upstreams.join(", "), a.fail_mode, a.select);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::failed(format!("signal: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
