//! # rpcx-smol
//!
//! rpcx on `futures-io` + `async-io`: a multiplexed [`Client`] and a [`Server`], both
//! thin drivers of the sans-IO machines in [`rpcx_core`], running on the smol and the
//! async-std executors. Wire-compatible with Go's smallnest/rpcx (MsgPack by default,
//! `__rpcx_error__`, `__ServerTimeout`, heartbeat, server push), and the same user
//! surface as `rpcx-tokio`.
//!
//! A service is a trait; `#[service]` registers it under Go's names and writes its
//! typed client:
//!
//! ```
//! use rpcx_smol::service::{Context, Router, ServiceError};
//! use rpcx_smol::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! pub struct Args { a: i64, b: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[serde(rename_all = "PascalCase")]
//! pub struct Reply { c: i64 }
//!
//! #[rpcx_smol::service(name = "Arith")]
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! let server = Server::new(Router::new().service(Calc.into_service())).bind("tcp@127.0.0.1:0").await?;
//! let client = Client::connect(server.address(), ClientOptions::default()).await?;
//! let reply = ArithClient::new(&client).mul(Args { a: 10, b: 20 }).await?;
//! assert_eq!(reply.c, 200);
//! # client.close().await;
//! # server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }) }
//! ```
//!
//! The dynamic API underneath: closures registered by name, calls by name.
//!
//! ```
//! use rpcx_smol::service::{Context, Router, Service};
//! use rpcx_smol::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[allow(non_snake_case)]
//! struct Args { A: i64, B: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[allow(non_snake_case)]
//! struct Reply { C: i64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
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
//! # Ok(()) }) }
//! ```
//!
//! ## Which runtime crate
//!
//! Pick `rpcx-smol` on smol or async-std, `rpcx-tokio` on tokio, `rpcx-std` for
//! blocking code with no async runtime. This crate and `rpcx-tokio` are the same code
//! (`rpcx-async`, written once over `futures-io`) with a different
//! [`Runtime`](rpcx_async::Runtime) plugged in: here it is the [`Spawner`], with
//! `async-io` for sockets and timers. Options, behaviour and errors are identical.
//!
//! ## Executors
//!
//! Sockets and timers come from `async-io`, whose reactor smol and async-std share, and
//! every channel is runtime-neutral (`async-channel`, `futures-channel`), so the same
//! futures run under `smol::block_on`, `async_std::task::block_on` or any executor.
//! The crate spawns its background tasks (connection drivers, the accept loop, handlers
//! that wait) through the [`Spawner`] in [`ClientOptions::runtime`] and
//! [`ServerOptions::runtime`]. The default is the `async-global-executor` pool, which
//! *is* async-std's executor and runs its own threads, so it also works from inside
//! `smol::block_on`; smol users who want everything on their own `smol::Executor` pass
//! a spawner for it. TCP and unix reads go by reactor readiness ([`Ready`]), so a
//! driver woken for something else does not pay a failed read syscall.

mod runtime;
mod spawn;

pub use runtime::{Ready, SmolTimer};
pub use spawn::Spawner;

/// An rpcx client over one multiplexed connection (see [`rpcx_async::Client`]).
pub type Client = rpcx_async::Client<Spawner>;
/// Client options (see [`rpcx_async::ClientOptions`]).
pub type ClientOptions = rpcx_async::ClientOptions<Spawner>;
/// A call being configured (see [`rpcx_async::RequestBuilder`]).
pub type RequestBuilder<'a> = rpcx_async::RequestBuilder<'a, Spawner>;
/// An rpcx server (see [`rpcx_async::Server`]).
pub type Server = rpcx_async::Server<Spawner>;
/// A running server (see [`rpcx_async::ServerHandle`]).
pub type ServerHandle = rpcx_async::ServerHandle<Spawner>;
/// Server options (see [`rpcx_async::ServerOptions`]).
pub type ServerOptions = rpcx_async::ServerOptions<Spawner>;
/// A connected stream of any transport (see [`rpcx_async::Stream`]).
pub type Stream = rpcx_async::Stream<Spawner>;

/// One service path over many servers (see [`rpcx_async::xclient`]).
pub mod xclient {
    pub use rpcx_async::xclient::{Receipt, XCall, XPushReceiver};
    pub use rpcx_core::govern::XPush;
    /// An XClient on smol / async-std (see [`rpcx_async::XClient`]).
    pub type XClient = rpcx_async::XClient<super::Spawner>;
    /// XClients used in turn (see [`rpcx_async::XClientPool`]).
    pub type XClientPool = rpcx_async::XClientPool<super::Spawner>;
    /// One client for every service (see [`rpcx_async::OneClient`]).
    pub type OneClient = rpcx_async::OneClient<super::Spawner>;
    /// XClient options (see [`rpcx_async::XClientOptions`]).
    pub type XClientOptions = rpcx_async::XClientOptions<super::Spawner>;
    /// A call through an XClient being configured (see [`rpcx_async::XRequestBuilder`]).
    pub type XRequestBuilder<'a> = rpcx_async::XRequestBuilder<'a, super::Spawner>;
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
