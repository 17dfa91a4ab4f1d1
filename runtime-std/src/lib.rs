//! # rpcx-std
//!
//! rpcx over blocking `std::net` sockets and threads, with no async runtime inside: a
//! multiplexed blocking [`Client`] and a thread-based [`Server`], both thin drivers of
//! the sans-IO machines in [`rpcx_core`]. Wire-compatible with Go's smallnest/rpcx
//! (MsgPack by default, `__rpcx_error__`, `__ServerTimeout`, heartbeat, server push),
//! and with the same surface as `rpcx-tokio`, minus the `async`.
//!
//! A service is a trait; `#[service]` registers it under Go's names and writes its
//! typed client, a blocking one here (`.call()` sends and waits):
//!
//! ```
//! use rpcx_std::service::{Context, Router, ServiceError};
//! use rpcx_std::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[serde(rename_all = "PascalCase")]
//! pub struct Args { a: i64, b: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[serde(rename_all = "PascalCase")]
//! pub struct Reply { c: i64 }
//!
//! #[rpcx_std::service(name = "Arith")]
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
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Router::new().service(Calc.into_service())).bind("tcp@127.0.0.1:0")?;
//! let client = Client::connect(server.address(), ClientOptions::default())?;
//! let reply = ArithClient::new(&client).mul(Args { a: 10, b: 20 }).call()?;
//! assert_eq!(reply.c, 200);
//! # client.close();
//! # server.close();
//! # Ok(()) }
//! ```
//!
//! The dynamic API underneath: closures registered by name, calls by name.
//!
//! ```
//! use rpcx_std::service::{Context, Router, Service};
//! use rpcx_std::{Client, ClientOptions, Server};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! #[allow(non_snake_case)]
//! struct Args { A: i64, B: i64 }
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! #[allow(non_snake_case)]
//! struct Reply { C: i64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::new().service(
//!     Service::new("Arith").method("Mul", |_ctx: Context, a: Args| async move { Ok(Reply { C: a.A * a.B }) }),
//! );
//! let server = Server::new(router).bind("tcp@127.0.0.1:0")?;
//!
//! let client = Client::connect(server.address(), ClientOptions::default())?;
//! let reply: Reply = client.call("Arith", "Mul", &Args { A: 10, B: 20 })?;
//! assert_eq!(reply.C, 200);
//!
//! let err = client.call::<_, Reply>("Arith", "Div", &Args { A: 1, B: 0 }).unwrap_err();
//! assert_eq!(err.to_string(), "rpcx: can't find method Div");
//!
//! client.close();
//! server.shutdown(std::time::Duration::from_secs(1));
//! # Ok(()) }
//! ```
//!
//! ## Which runtime crate
//!
//! Pick `rpcx-std` for blocking programs with no async runtime (a thread per caller,
//! or a few threads with many calls in flight through [`Client::go`]); pick
//! `rpcx-tokio` or `rpcx-smol` inside an async program (they are one code base,
//! `rpcx-async`, and scale to more connections per thread). All three share the core:
//! the same [`ClientSession`](rpcx_core::conn::ClientSession) keeps every client's
//! calls, the same [`Governor`](rpcx_core::govern::Governor) decides every XClient
//! call, the same [`service::Router`] serves every request, so behaviour, options and
//! errors match across them (the conformance suite runs every client against every
//! server).
//!
//! ## Threads
//!
//! No connection has a driver thread: its machine sits behind a lock, and the thread
//! that has something for it takes the lock and drives it.
//!
//! * Client: a reader thread reads responses and completes the calls itself; a
//!   housekeeping thread writes the queued requests (in batches under load) and sleeps
//!   until the machine's next deadline (call deadlines, heartbeat). Callers queue their
//!   call without waiting for the lock and block on a one-shot reply slot; a call that
//!   is given up (its [`PendingCall`] dropped or timed out) is cancelled, so it never
//!   holds an in-flight slot. One thread can keep many calls in flight with
//!   [`Client::go`] / [`RequestBuilder::go_raw`].
//! * Server: an accept thread; per connection a reader thread, which dispatches
//!   requests and answers those whose handler finishes without waiting, and a
//!   housekeeping thread (timeouts, writes the socket did not take at once, close); and
//!   a pool of at most [`ServerOptions::workers`] threads for handlers that wait.
//!
//! ## Handlers
//!
//! Services are the runtime-agnostic [`service::Router`] shared with the async
//! runtimes; handlers are plain `std::future::Future`s run with this crate's [`block_on`]
//! (a thread-parking waker). They must not depend on a specific async runtime: a handler
//! that awaits a tokio timer or tokio IO does not work here. Waiting on anything that
//! wakes the future's waker from another thread does.
//!
//! A handler that does not wait is answered on its connection's reader thread; one that
//! blocks the thread (blocking IO, `std::thread::sleep`) therefore stalls its
//! connection: set [`ServerOptions::inline_handlers`] to `false` for such services.
//!
//! ## Cost
//!
//! Every blocking call parks its caller's thread until the driver wakes it: one OS
//! context switch per call, and a few thread hand-offs (caller, driver, reader) on each
//! round trip. At high concurrency an async runtime (`rpcx-tokio`) therefore does more
//! calls per CPU, and at concurrency 1 each hand-off adds microseconds of latency. The
//! `load` example measures both. What this crate offers in exchange: no async runtime,
//! plain threads, and `Send + Sync` handles that work from any thread.
//!
//! ## Many servers
//!
//! [`XClient`] calls one service path over the servers a discovery lists, with Go's
//! fail modes, selectors, circuit breakers and Broadcast/Fork/Inform, executing the
//! policies of [`rpcx_core::govern`]; it keeps one cached [`Client`] per server.
//!
//! ## Server push
//!
//! Handlers push with `ctx.pusher()`. The client receives pushes on a bounded
//! `std::sync::mpsc` channel ([`Client::take_push_receiver`]); when it is full the newest
//! push is dropped and counted in [`Client::dropped_pushes`], so a slow consumer never
//! stalls the connection.

// `Error` is the same type as rpcx-tokio's (where async fns escape this lint), so that
// `Error::Call(CallError::..)` stays matchable across runtimes; it is large because a
// remote error carries the whole response, and one is moved per call at most.
#![allow(clippy::result_large_err)]

mod client;
mod engine;
mod error;
mod executor;
mod housekeeper;
mod reply;
mod server;
pub mod tls;
mod transport;
pub mod xclient;
mod xpool;
pub use xpool::{OneClient, XClientPool};

pub use client::{Client, ClientOptions, PendingCall, PushReceiver, RequestBuilder};
pub use error::Error;
pub use executor::block_on;
pub use rpcx_core::govern::XPush;
pub use server::{Server, ServerHandle, ServerOptions};
pub use xclient::{Receipt, XCall, XClient, XClientOptions, XPushReceiver, XRequestBuilder};

pub use rpcx_core as core;
pub use rpcx_core::service;
pub use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
/// `#[service]` on a trait: its registration and a typed client stub (see `rpcx_core::stub`).
pub use rpcx_macros::service;
