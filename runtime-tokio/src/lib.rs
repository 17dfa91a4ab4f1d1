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
//!     Service::new("Arith").method("Mul", |_ctx: Context, a: Args| async move { Ok::<_, String>(Reply { C: a.A * a.B }) }),
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

mod client;
mod error;
mod server;
pub mod tls;
mod transport;
pub mod xclient;

pub use client::{Client, ClientOptions, PendingCall, RequestBuilder};
pub use error::Error;
pub use server::{Server, ServerHandle, ServerOptions};
pub use transport::Stream;
pub use xclient::{Receipt, XClient, XClientOptions};

pub use rpcx_core as core;
pub use rpcx_core::service;
pub use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
