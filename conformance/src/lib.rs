//! One conformance suite for every runtime: the scenarios in [`scenarios`] take a server
//! runtime and a client runtime behind the small blocking facades [`ServerRt`] and
//! [`ClientRt`], so the same checks run for tokio->tokio, std->tokio, tokio->std, ...
//! (see `tests/matrix.rs`; all nine pairs of tokio, smol and std).
//!
//! The XClient scenarios ([`xscenarios`]) take a server runtime and an XClient runtime
//! behind [`xclient::XClientRt`] the same way (`tests/xclient.rs`, nine pairs).
//!
//! The services ([`services::router`]) are runtime-neutral: the one that waits uses a
//! timer thread rather than any runtime's timer, so a service written once serves on
//! every runtime.
#![allow(missing_docs, clippy::print_stdout)]

pub mod child;
pub mod faults;
pub mod hook_scenarios;
pub mod http_scenarios;
pub mod runtimes;
pub mod scenarios;
pub mod server_scenarios;
pub mod services;
pub mod xclient;
pub mod xscenarios;

use bytes::Bytes;
use rpcx_core::conn::CallSpec;
use rpcx_core::service::Router;
use rpcx_core::wire::{CompressType, Message};
use std::sync::Arc;
use std::time::Duration;

/// How a call failed, the same for every runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fail {
    /// The server's `__rpcx_error__` text.
    Remote(String),
    /// The call's deadline passed.
    Timeout,
    /// The connection ended under the call (or was already gone).
    Lost,
    /// Anything else, with its text.
    Other(String),
}

/// Server options the scenarios need.
#[derive(Debug, Clone, Default)]
pub struct ServeOpts {
    pub read_timeout: Option<Duration>,
    /// Where to bind (default `tcp@127.0.0.1:0`).
    pub addr: Option<String>,
    /// Requests in flight per connection (the runtime's default when `None`).
    pub max_in_flight: Option<usize>,
    /// Serve TLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Start from these settings instead of the defaults (the fields above apply on
    /// top).
    pub settings: Option<rpcx_core::service::ServerSettings>,
    /// std only: run every handler on the worker pool (`inline_handlers(false)`).
    pub worker_pool_only: bool,
}

/// Client options the scenarios need.
#[derive(Debug, Clone, Default)]
pub struct ConnOpts {
    pub heartbeat: Option<Duration>,
    pub compress: Option<CompressType>,
    /// Client hooks.
    pub hooks: rpcx_core::conn::ClientHookSet,
    /// The client's error-text function.
    pub error_text: Option<rpcx_core::conn::ErrorTextFn>,
}

/// A running server, whatever the runtime.
pub trait ServerCtl: Send {
    fn address(&self) -> String;
    fn shutdown(self: Box<Self>, grace: Duration);
    fn close(self: Box<Self>);
    /// The server's counters (`None` for a runtime that has none).
    fn stats(&self) -> Option<rpcx_core::service::ServerTotals> {
        None
    }
}

/// A connected client, whatever the runtime.
pub trait ClientCtl: Send + Sync {
    fn call(&self, spec: CallSpec) -> Result<Option<Message>, Fail>;
    fn next_push(&self, timeout: Duration) -> Option<Message>;
    fn is_shutdown(&self) -> bool;
    fn close(&self);
}

/// Starts servers on one runtime.
pub trait ServerRt: Send + Sync {
    fn name(&self) -> &'static str;
    /// Start a server; `Err` with the error's text if it could not start.
    fn try_serve(&self, router: Router, opts: ServeOpts) -> Result<Box<dyn ServerCtl>, String>;
    /// Start a server that must start.
    fn serve(&self, router: Router, opts: ServeOpts) -> Box<dyn ServerCtl> {
        self.try_serve(router, opts).expect("bind")
    }
}

/// Connects clients on one runtime.
pub trait ClientRt: Send + Sync {
    fn name(&self) -> &'static str;
    fn connect(&self, addr: &str, opts: ConnOpts) -> Arc<dyn ClientCtl>;
}

/// A call started on another thread, to wait for later.
pub fn start(client: &Arc<dyn ClientCtl>, spec: CallSpec) -> std::thread::JoinHandle<Result<Option<Message>, Fail>> {
    let c = client.clone();
    std::thread::spawn(move || c.call(spec))
}

/// A byte pattern that compresses well but is not constant.
pub fn pattern(n: usize) -> Bytes {
    (0..n).map(|i| b"rpcx-conformance-"[i % 17] ^ (i / 97) as u8).collect::<Vec<u8>>().into()
}

/// One `#[test]` per scenario and server runtime: `on_every_server!(faults; a, b)` makes
/// `mod a { fn tokio(), fn smol(), fn std() }` calling `faults::a(&Tokio)` and so on,
/// for scenario functions of this crate that take a `&dyn ServerRt`.
#[macro_export]
macro_rules! on_every_server {
    ($module:ident; $($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                fn tokio() {
                    $crate::$module::$scenario(&$crate::runtimes::Tokio);
                }
                #[test]
                fn smol() {
                    $crate::$module::$scenario(&$crate::runtimes::Smol);
                }
                #[test]
                fn std() {
                    $crate::$module::$scenario(&$crate::runtimes::Std);
                }
            }
        )*
    };
}
