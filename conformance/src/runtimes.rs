//! The facades for each runtime.

use crate::{ClientCtl, ClientRt, ConnOpts, Fail, ServeOpts, ServerCtl, ServerRt};
use rpcx_core::conn::{CallError, CallSpec};
use rpcx_core::service::Router;
use rpcx_core::wire::Message;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

fn fail_of(call: Option<&CallError>, shutdown: bool, text: String) -> Fail {
    match call {
        Some(CallError::Remote(r)) => Fail::Remote(r.text.clone()),
        Some(CallError::TimedOut) => Fail::Timeout,
        Some(CallError::ConnectionLost(_)) => Fail::Lost,
        _ if shutdown => Fail::Lost,
        _ => Fail::Other(text),
    }
}

// ---------------------------------------------------------------- tokio

/// rpcx-tokio, on a shared multi-thread runtime.
pub struct Tokio;

pub(crate) fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
    })
}

/// Every runtime shares one client error type.
fn fail(e: rpcx_core::error::Error) -> Fail {
    let shutdown = matches!(e, rpcx_core::error::Error::Shutdown);
    let call = if let rpcx_core::error::Error::Call(c) = &e { Some(c) } else { None };
    fail_of(call, shutdown, e.to_string())
}

struct TokioServer(rpcx_tokio::ServerHandle);

impl ServerCtl for TokioServer {
    fn address(&self) -> String {
        self.0.address().to_owned()
    }
    fn stats(&self) -> Option<rpcx_core::service::ServerTotals> {
        Some(self.0.stats())
    }
    fn shutdown(self: Box<Self>, grace: Duration) {
        tokio_rt().block_on(self.0.shutdown(grace));
    }
    fn close(self: Box<Self>) {
        tokio_rt().block_on(self.0.close());
    }
}

struct TokioClient {
    client: rpcx_tokio::Client,
    pushes: Mutex<Option<rpcx_tokio::PushReceiver>>,
}

impl ClientCtl for TokioClient {
    fn call(&self, spec: CallSpec) -> Result<Option<Message>, Fail> {
        tokio_rt().block_on(self.client.send(spec)).map_err(fail)
    }
    fn next_push(&self, timeout: Duration) -> Option<Message> {
        let mut guard = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        let rx = guard.as_mut()?;
        tokio_rt().block_on(async { tokio::time::timeout(timeout, rx.recv()).await.ok().flatten() })
    }
    fn is_shutdown(&self) -> bool {
        self.client.is_shutdown()
    }
    fn close(&self) {
        tokio_rt().block_on(self.client.close());
    }
}

impl ServerRt for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }
    fn try_serve(&self, router: Router, opts: ServeOpts) -> Result<Box<dyn ServerCtl>, String> {
        let mut s = rpcx_tokio::Server::new(router);
        if let Some(settings) = opts.settings {
            s = s.settings(settings);
        }
        if let Some(d) = opts.read_timeout {
            s = s.read_timeout(d);
        }
        if let Some(n) = opts.max_in_flight {
            s = s.max_in_flight(n);
        }
        if let Some(tls) = opts.tls {
            s = s.tls(tls);
        }
        let bound = tokio_rt().block_on(s.bind(opts.addr.as_deref().unwrap_or("tcp@127.0.0.1:0")));
        Ok(Box::new(TokioServer(bound.map_err(|e| e.to_string())?)))
    }
}

impl ClientRt for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }
    fn connect(&self, addr: &str, opts: ConnOpts) -> Arc<dyn ClientCtl> {
        let o = rpcx_tokio::ClientOptions {
            connection: rpcx_core::conn::ClientConfig {
                heartbeat_interval: opts.heartbeat,
                hooks: opts.hooks.clone(),
                error_text: opts.error_text.clone(),
                ..Default::default()
            },
            compress: opts.compress.unwrap_or_default(),
            ..Default::default()
        };
        let client = tokio_rt().block_on(rpcx_tokio::Client::connect(addr, o)).expect("connect");
        let pushes = Mutex::new(client.take_push_receiver());
        Arc::new(TokioClient { client, pushes })
    }
}

// ---------------------------------------------------------------- std

/// rpcx-std: blocking sockets and threads.
pub struct Std;

struct StdServer(rpcx_std::ServerHandle);

impl ServerCtl for StdServer {
    fn address(&self) -> String {
        self.0.address().to_owned()
    }
    fn stats(&self) -> Option<rpcx_core::service::ServerTotals> {
        Some(self.0.stats())
    }
    fn shutdown(self: Box<Self>, grace: Duration) {
        self.0.shutdown(grace);
    }
    fn close(self: Box<Self>) {
        self.0.close();
    }
}

struct StdClient {
    client: rpcx_std::Client,
    pushes: Mutex<Option<rpcx_std::PushReceiver>>,
}

impl ClientCtl for StdClient {
    fn call(&self, spec: CallSpec) -> Result<Option<Message>, Fail> {
        self.client.send(spec).map_err(fail)
    }
    fn next_push(&self, timeout: Duration) -> Option<Message> {
        let guard = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref()?.recv_timeout(timeout)
    }
    fn is_shutdown(&self) -> bool {
        self.client.is_shutdown()
    }
    fn close(&self) {
        self.client.close();
    }
}

impl ServerRt for Std {
    fn name(&self) -> &'static str {
        "std"
    }
    fn try_serve(&self, router: Router, opts: ServeOpts) -> Result<Box<dyn ServerCtl>, String> {
        let mut s = rpcx_std::Server::new(router).inline_handlers(!opts.worker_pool_only);
        if let Some(settings) = opts.settings {
            s = s.settings(settings);
        }
        if let Some(d) = opts.read_timeout {
            s = s.read_timeout(d);
        }
        if let Some(n) = opts.max_in_flight {
            s = s.max_in_flight(n);
        }
        if let Some(tls) = opts.tls {
            s = s.tls(tls);
        }
        Ok(Box::new(StdServer(s.bind(opts.addr.as_deref().unwrap_or("tcp@127.0.0.1:0")).map_err(|e| e.to_string())?)))
    }
}

impl ClientRt for Std {
    fn name(&self) -> &'static str {
        "std"
    }
    fn connect(&self, addr: &str, opts: ConnOpts) -> Arc<dyn ClientCtl> {
        let o = rpcx_std::ClientOptions {
            connection: rpcx_core::conn::ClientConfig {
                heartbeat_interval: opts.heartbeat,
                hooks: opts.hooks.clone(),
                error_text: opts.error_text.clone(),
                ..Default::default()
            },
            compress: opts.compress.unwrap_or_default(),
            ..Default::default()
        };
        let client = rpcx_std::Client::connect(addr, o).expect("connect");
        let pushes = Mutex::new(client.take_push_receiver());
        Arc::new(StdClient { client, pushes })
    }
}

// ---------------------------------------------------------------- smol

/// rpcx-smol on its default spawner (async-global-executor), driven with `smol::block_on`.
pub struct Smol;

struct SmolServer(rpcx_smol::ServerHandle);

impl ServerCtl for SmolServer {
    fn address(&self) -> String {
        self.0.address().to_owned()
    }
    fn stats(&self) -> Option<rpcx_core::service::ServerTotals> {
        Some(self.0.stats())
    }
    fn shutdown(self: Box<Self>, grace: Duration) {
        smol::block_on(self.0.shutdown(grace));
    }
    fn close(self: Box<Self>) {
        smol::block_on(self.0.close());
    }
}

struct SmolClient {
    client: rpcx_smol::Client,
    pushes: Option<rpcx_smol::PushReceiver>,
}

impl ClientCtl for SmolClient {
    fn call(&self, spec: CallSpec) -> Result<Option<Message>, Fail> {
        smol::block_on(self.client.send(spec)).map_err(fail)
    }
    fn next_push(&self, timeout: Duration) -> Option<Message> {
        let rx = self.pushes.as_ref()?;
        smol::block_on(futures_lite::future::or(async { rx.recv().await }, async {
            async_io::Timer::after(timeout).await;
            None
        }))
    }
    fn is_shutdown(&self) -> bool {
        self.client.is_shutdown()
    }
    fn close(&self) {
        smol::block_on(self.client.close());
    }
}

impl ServerRt for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }
    fn try_serve(&self, router: Router, opts: ServeOpts) -> Result<Box<dyn ServerCtl>, String> {
        let mut s = rpcx_smol::Server::new(router);
        if let Some(settings) = opts.settings {
            s = s.settings(settings);
        }
        if let Some(d) = opts.read_timeout {
            s = s.read_timeout(d);
        }
        if let Some(n) = opts.max_in_flight {
            s = s.max_in_flight(n);
        }
        if let Some(tls) = opts.tls {
            s = s.tls(tls);
        }
        let bound = smol::block_on(s.bind(opts.addr.as_deref().unwrap_or("tcp@127.0.0.1:0")));
        Ok(Box::new(SmolServer(bound.map_err(|e| e.to_string())?)))
    }
}

impl ClientRt for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }
    fn connect(&self, addr: &str, opts: ConnOpts) -> Arc<dyn ClientCtl> {
        let o = rpcx_smol::ClientOptions {
            connection: rpcx_core::conn::ClientConfig {
                heartbeat_interval: opts.heartbeat,
                hooks: opts.hooks.clone(),
                error_text: opts.error_text.clone(),
                ..Default::default()
            },
            compress: opts.compress.unwrap_or_default(),
            ..Default::default()
        };
        let client = smol::block_on(rpcx_smol::Client::connect(addr, o)).expect("connect");
        let pushes = client.take_push_receiver();
        Arc::new(SmolClient { client, pushes })
    }
}
