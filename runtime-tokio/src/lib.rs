//! # rpcx-tokio
//!
//! rpcx on the tokio runtime: a multiplexed [`Client`] and a [`Server`], both thin
//! drivers of the sans-IO machines in [`rpcx_core`]. Wire-compatible with Go's
//! smallnest/rpcx (MsgPack by default, `__rpcx_error__`, `__ServerTimeout`, heartbeat,
//! server push).
//!
//! A service is a trait; `#[service]` registers it under Go's names and writes its
//! typed client (`ArithClient`), which works over a [`Client`] or an [`XClient`]:
//!
//! ```
//! use rpcx_tokio::service::{Context, Router, ServiceError};
//! use rpcx_tokio::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! pub struct Args { a: i64, b: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[serde(rename_all = "PascalCase")]
//! pub struct Reply { c: i64 }
//!
//! #[rpcx_tokio::service(name = "Arith")]
//! pub trait Arith {
//!     async fn mul(&self, ctx: &Context, args: Args) -> Result<Reply, ServiceError>;
//! }
//!
//! struct Calc;
//! impl Arith for Calc {
//!     async fn mul(&self, _ctx: &Context, a: Args) -> Result<Reply, ServiceError> {
//!         Ok(Reply { c: a.a * a.b })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Router::new().service(Calc.into_service())).bind("tcp@127.0.0.1:0").await?;
//!
//! let client = Client::connect(server.address(), ClientOptions::default()).await?;
//! let arith = ArithClient::new(&client);
//! let reply = arith.mul(Args { a: 10, b: 20 }).timeout(std::time::Duration::from_secs(1)).await?;
//! assert_eq!(reply.c, 200);
//!
//! client.close().await;
//! server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! Underneath is the dynamic API the trait compiles to, for services known only at run
//! time: closures registered by name, calls by name.
//!
//! ```
//! use rpcx_tokio::service::{Context, Router, Service};
//! use rpcx_tokio::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! struct Args { a: i64, b: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[serde(rename_all = "PascalCase")]
//! struct Reply { c: i64 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().service(
//!     Service::new("Arith").method("Mul", |_ctx: Context, a: Args| async move { Ok(Reply { c: a.a * a.b }) }),
//! );
//! let server = Server::new(router).bind("tcp@127.0.0.1:0").await?;
//!
//! let client = Client::connect(server.address(), ClientOptions::default()).await?;
//! let reply: Reply = client.call("Arith", "Mul", &Args { a: 10, b: 20 }).await?;
//! assert_eq!(reply.c, 200);
//!
//! let err = client.call::<_, Reply>("Arith", "Div", &Args { a: 1, b: 0 }).await.unwrap_err();
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
