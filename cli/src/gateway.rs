//! `rpcx gateway`: the book's rpcx-gateway and agent. An HTTP server (the X-RPCX
//! gateway and JSON-RPC 2.0, as on every rpcx port) whose every request is forwarded,
//! with its service path, method, metadata, serialize type and payload as they came,
//! to upstream rpcx servers through an XClient: its fail mode and selector choose and
//! retry. rpcx clients (`tcp@`, `http@`, `ws@`) can use it as a proxy the same way.
//!
//! Upstreams are a static list (`--upstream`, one XClient for every service) or found
//! in a registry (`--registry`, as Go's rpcx-gateway does): then each service path gets
//! its own discovery and XClient on its first request, up to `--max-services` of them
//! (a request naming one more is answered with an error, so callers cannot make the
//! gateway watch an unbounded number of registry prefixes).

use crate::registry::{Registry, RegistryArgs};
use crate::{Failure, Outcome};
use clap::{Args, ValueEnum};
use rpcx_tokio::core::govern::{FailMode, Instance, MultiDiscovery, SelectMode};
use rpcx_tokio::core::wire::Message;
use rpcx_tokio::service::{Router, ServiceError};
use rpcx_tokio::{Server, XClient, XClientOptions};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(Args, Debug)]
pub(crate) struct GatewayArgs {
    /// Listen address (port 0: any free port).
    #[arg(long, default_value = "tcp@127.0.0.1:9981")]
    addr: String,
    /// An upstream rpcx server (repeat for several): tcp@host:port, unix@/path, ...
    #[arg(long = "upstream", required_unless_present = "registry", conflicts_with = "registry")]
    upstreams: Vec<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// With --registry: how many service paths may be watched at once.
    #[arg(long, default_value_t = 256, requires = "registry")]
    max_services: usize,
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

/// Where a gateway's requests go.
pub(crate) enum Upstreams {
    /// One XClient over a static list, for every service.
    Static(Arc<XClient>),
    /// An XClient per service path, over the registry's discovery of it.
    Registry {
        registry: Box<Registry>,
        /// Options of every XClient made (a function: options may hold a selector,
        /// which is not shared between XClients).
        opts: Box<dyn Fn() -> XClientOptions + Send + Sync>,
        max: usize,
        clients: Mutex<HashMap<String, Arc<OnceCell<Arc<XClient>>>>>,
    },
}

impl Upstreams {
    /// The XClient for `service`, made (discovery listed once) on first use. A failed
    /// discovery is not kept: the next request tries again.
    async fn xclient(&self, service: &str) -> Result<Arc<XClient>, ServiceError> {
        let (registry, opts, max, clients) = match self {
            Upstreams::Static(xc) => return Ok(xc.clone()),
            Upstreams::Registry { registry, opts, max, clients } => (registry, opts, *max, clients),
        };
        let cell = {
            let mut map = clients.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(service) {
                Some(c) => c.clone(),
                None if map.len() >= max => {
                    return Err(ServiceError::new(format!(
                        "rpcx gateway: service {service:?} not served: already watching {max} services (--max-services)"
                    )));
                }
                None => map.entry(service.to_owned()).or_default().clone(),
            }
        };
        let made = cell
            .get_or_try_init(|| async {
                let discovery = registry.discovery(service).await?;
                Ok::<_, rpcx_registry::RegistryError>(Arc::new(XClient::new(service, discovery, opts())))
            })
            .await;
        match made {
            Ok(xc) => Ok(xc.clone()),
            Err(e) => {
                let mut map = clients.lock().unwrap_or_else(|p| p.into_inner());
                if map.get(service).is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized()) {
                    map.remove(service);
                }
                Err(ServiceError::new(format!("rpcx gateway: discovery of {service:?}: {e}")))
            }
        }
    }
}

/// The router of a gateway: nothing registered, everything forwarded to `upstreams`
/// (response metadata and errors come back as the upstream sent them).
pub(crate) fn forwarding_router(upstreams: Arc<Upstreams>) -> Router {
    Router::new().fallback(move |ctx, payload| {
        let upstreams = upstreams.clone();
        async move {
            let service = String::from_utf8_lossy(ctx.service_path_bytes()).into_owned();
            let xc = upstreams.xclient(&service).await?;
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
    let registry = a.registry.parse()?;
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
    let timeout = a.timeout;
    let opts = move || {
        let mut opts = XClientOptions { fail_mode, ..Default::default() }.select_mode(select);
        opts.client.call_timeout = Some(timeout);
        opts
    };
    let (upstreams, source) = match registry {
        Some(registry) => {
            let source =
                format!("services in {} under {}", a.registry.registry.as_deref().unwrap_or(""), a.registry.base_path);
            let clients = Mutex::new(HashMap::new());
            (
                Upstreams::Registry {
                    registry: Box::new(registry),
                    opts: Box::new(opts),
                    max: a.max_services.max(1),
                    clients,
                },
                source,
            )
        }
        None => {
            let discovery = Arc::new(MultiDiscovery::new(a.upstreams.iter().map(|u| Instance::new(u.as_str(), ""))));
            (Upstreams::Static(Arc::new(XClient::new("", discovery, opts()))), a.upstreams.join(", "))
        }
    };
    let server = Server::new(forwarding_router(Arc::new(upstreams)))
        .bind(&a.addr)
        .await
        .map_err(|e| Failure::failed(format!("listen on {}: {e}", a.addr)))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.address());
        let _ = out.flush();
    }
    eprintln!("forwarding to {source} ({:?}, {:?}); ctrl-c stops", a.fail_mode, a.select);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::failed(format!("signal: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
