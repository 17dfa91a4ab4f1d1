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
    let server = server.bind(&a.addr).await.map_err(|e| Failure::failed(format!("listen on {}: {e}", a.addr)))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.address());
        let _ = out.flush();
    }
    eprintln!("services: Arith.Mul, Arith.Add, Echo.Meta, Echo.Raw, Notify.Subscribe; ctrl-c stops");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Failure::failed(format!("signal: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
