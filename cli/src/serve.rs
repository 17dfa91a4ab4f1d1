//! `rpcx serve`: the book's services on an address, for trying clients against.

use crate::{Failure, Outcome};
use clap::Args;
use rpcx_tokio::Server;
use rpcx_tokio::service::Router;
use std::io::Write;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Listen address: tcp@host:port, host:port or unix@/path (port 0: any free port).
    #[arg(long, default_value = "tcp@127.0.0.1:8972")]
    addr: String,
    /// Require this token in every request's `__AUTH` metadata.
    #[arg(long)]
    auth: Option<String>,
    /// Runtime worker threads (default: one per CPU, or TOKIO_WORKER_THREADS).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Serve TLS with a fresh self-signed certificate for `localhost` (clients: --tls --insecure).
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    registry: crate::registry::RegistryArgs,
    /// With --registry: the host published there (needed when listening on 0.0.0.0 or [::]).
    #[arg(long, value_name = "HOST", requires = "registry")]
    advertise: Option<String>,
}

/// The examples' router: `Arith.Mul`/`Arith.Add`, `Notify.Subscribe`, `Echo.Meta` and
/// `Echo.Raw` (which `rpcx bench` uses by default).
pub(crate) fn router(auth: Option<String>) -> Router {
    rpcx_examples_common::router(auth)
}

pub(crate) async fn run(a: ServeArgs) -> Outcome {
    crate::net::check_addr(&a.addr)?;
    let mut server = Server::new(router(a.auth.filter(|t| !t.is_empty())));
    if a.tls {
        let (config, _) = rpcx_examples_common::self_signed_localhost_tls();
        server = server.tls(config);
    }
    if let Some(registry) = a.registry.parse()? {
        server = server.registrar(registry.registrar()?);
        if let Some(host) = &a.advertise {
            server = server.advertise_address(host.clone());
        }
    }
    let server = server.bind(&a.addr).await.map_err(|e| Failure::failed(format!("listen on {}: {e}", a.addr)))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.address());
        let _ = out.flush();
    }
    eprintln!("services: Arith.Mul, Arith.Add, Echo.Meta, Echo.Raw, Notify.Subscribe; ctrl-c stops");
    if let Some(url) = &a.registry.registry {
        eprintln!("registered in {url} under {}", a.registry.base_path);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::failed(format!("signal: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
