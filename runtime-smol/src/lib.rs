//! # rpcx-smol
//!
//! rpcx on `futures-io` + `async-io`: a multiplexed [`Client`] and a [`Server`], both
//! thin drivers of the sans-IO machines in [`rpcx_core`], running on the smol and the
//! async-std executors. Wire-compatible with Go's smallnest/rpcx (MsgPack by default,
//! `__rpcx_error__`, `__ServerTimeout`, heartbeat, server push), and the same user
//! surface as `rpcx-tokio`.
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
//! # Ok(()) }) }
//! ```
//!
//! ## Executors
//!
//! Sockets and timers come from `async-io`, whose reactor smol and async-std share, and
//! every channel is runtime-neutral (`async-channel`, `futures-channel`), so the same
//! futures run under `smol::block_on`, `async_std::task::block_on` or any executor.
//! The crate spawns its background tasks (connection drivers, the accept loop, handlers
//! that wait) through a [`Spawner`] in [`ClientOptions`] and [`ServerOptions`]. The
//! default is the `async-global-executor` pool, which *is* async-std's executor and
//! runs its own threads, so it also works from inside `smol::block_on`; smol users who
//! want everything on their own `smol::Executor` pass a spawner for it.
//!
//! ## Many servers
//!
//! [`XClient`] calls one service path over the servers a discovery lists, with Go's
//! fail modes, selectors, circuit breakers and Broadcast/Fork/Inform, executing the
//! policies of [`rpcx_core::govern`]; it keeps one cached [`Client`] per server and
//! races its attempts on the caller's task (no spawn per attempt), so it runs on any
//! executor.
//!
//! ## The driver
//!
//! One task owns each connection and its whole stream (no split, no lock): it polls, in
//! order, finished handlers (server), the socket write, the socket read, the command or
//! push channel, the shutdown signals and one `async_io::Timer` re-armed only when the
//! core's next deadline changes; every operation polled is cancel-safe. After each
//! wake-up it drains the machine's transmits and events until both are empty (the
//! server writes after at most 32 events, so responses leave while the rest of a large
//! read batch is handled). A handler that finishes without waiting is answered inline,
//! with no spawn. TCP and unix reads go by reactor readiness, so a driver woken for
//! something else does not pay a failed read syscall.

mod client;
mod error;
mod server;
mod spawn;
pub mod tls;
mod transport;
pub mod xclient;

pub use client::{Client, ClientOptions, PendingCall, RequestBuilder};
pub use error::Error;
pub use server::{Server, ServerHandle, ServerOptions};
pub use spawn::Spawner;
pub use transport::Stream;
pub use xclient::{Receipt, XCall, XClient, XClientOptions};

pub use rpcx_core as core;
pub use rpcx_core::service;
pub use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
