//! # rpcx-tokio
//!
//! rpcx on the tokio runtime: a multiplexed [`Client`] and a [`Server`], both thin
//! drivers of the sans-IO machines in [`rpcx_core`]. Wire-compatible with Go's
//! smallnest/rpcx (MsgPack by default, `__rpcx_error__`, `__ServerTimeout`, heartbeat,
//! server push).
//!
//! ```
//! use rpcx_tokio::service::{Context, Router, Service};
//! use rpcx_tokio::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[allow(non_snake_case)]
//! struct Args { A: i64, B: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[allow(non_snake_case)]
//! struct Reply { C: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().service(
//!     Service::new("Arith").method("Mul", |_ctx: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) }),
//! );
//! let server = Server::new(router).bind("tcp@127.0.0.1:0").await?;
//!
//! let client = Client::connect(server.address(), ClientOptions::default()).await?;
//! let reply: Reply = client.call("Arith", "Mul", &Args { A: 10, B: 20 }).await?;
//! assert_eq!(reply.C, 200);
//!
//! let err = client.call::<_, Reply>("Arith", "Div", &Args { A: 1, B: 0 }).await.unwrap_err();
//! assert_eq!(err.to_string(), "rpcx: can't find method Div");
//!
//! client.close().await;
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! ## Which runtime crate
//!
//! Pick `rpcx-tokio` when your program runs on tokio, `rpcx-smol` on smol or
//! async-std, `rpcx-std` for blocking code with no async runtime at all. The first two
//! are the same code (`rpcx-async`, written once over `futures-io`) with a different
//! [`Runtime`](rpcx_async::Runtime) plugged in: this crate is that plug ([`Tokio`])
//! and the names below, so behaviour, options and errors are identical across them.
//! Tasks are spawned with `tokio::spawn`: create clients and servers inside a tokio
//! runtime (multi-threaded for the best throughput).

mod runtime;

pub use runtime::{Tokio, TokioTimer};

/// An rpcx client over one multiplexed connection (see [`rpcx_async::Client`]).
pub type Client = rpcx_async::Client<Tokio>;
/// Client options (see [`rpcx_async::ClientOptions`]).
pub type ClientOptions = rpcx_async::ClientOptions<Tokio>;
/// A call being configured (see [`rpcx_async::RequestBuilder`]).
pub type RequestBuilder<'a> = rpcx_async::RequestBuilder<'a, Tokio>;
/// An rpcx server (see [`rpcx_async::Server`]).
pub type Server = rpcx_async::Server<Tokio>;
/// A running server (see [`rpcx_async::ServerHandle`]).
pub type ServerHandle = rpcx_async::ServerHandle<Tokio>;
/// Server options (see [`rpcx_async::ServerOptions`]).
pub type ServerOptions = rpcx_async::ServerOptions<Tokio>;
/// A connected stream of any transport (see [`rpcx_async::Stream`]).
pub type Stream = rpcx_async::Stream<Tokio>;

/// One service path over many servers (see [`rpcx_async::xclient`]).
pub mod xclient {
    pub use rpcx_async::xclient::{Receipt, XCall, XPushReceiver};
    pub use rpcx_core::govern::XPush;
    /// An XClient on tokio (see [`rpcx_async::XClient`]).
    pub type XClient = rpcx_async::XClient<super::Tokio>;
    /// XClients used in turn (see [`rpcx_async::XClientPool`]).
    pub type XClientPool = rpcx_async::XClientPool<super::Tokio>;
    /// One client for every service (see [`rpcx_async::OneClient`]).
    pub type OneClient = rpcx_async::OneClient<super::Tokio>;
    /// XClient options (see [`rpcx_async::XClientOptions`]).
    pub type XClientOptions = rpcx_async::XClientOptions<super::Tokio>;
    /// A call through an XClient being configured (see [`rpcx_async::XRequestBuilder`]).
    pub type XRequestBuilder<'a> = rpcx_async::XRequestBuilder<'a, super::Tokio>;
}

pub use rpcx_async::{Error, PendingCall, PushReceiver, tls};
pub use xclient::{
    OneClient, Receipt, XCall, XClient, XClientOptions, XClientPool, XPush, XPushReceiver, XRequestBuilder,
};

pub use rpcx_core as core;
pub use rpcx_core::service;
pub use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
/// `#[service]` on a trait: its registration and a typed client stub (see `rpcx_core::stub`).
pub use rpcx_macros::service;
