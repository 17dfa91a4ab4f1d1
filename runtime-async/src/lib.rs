//! # rpcx-async
//!
//! The rpcx [`Client`], [`Server`] and [`XClient`], written once over `futures-io`
//! streams and the small [`Runtime`] trait, all of them thin drivers of the sans-IO
//! machines and policies in [`rpcx_core`]. Users depend on a runtime crate instead:
//! `rpcx-tokio` (tokio) or `rpcx-smol` (smol and async-std executors). Each of those is
//! this crate plus a `Runtime` implementation and type aliases (`rpcx_tokio::Client` is
//! `rpcx_async::Client<rpcx_tokio::Tokio>`), so every feature and every fix here
//! reaches both, with one behaviour.
//!
//! Implement [`Runtime`] to run rpcx on another executor: spawning, one timer, and TCP
//! and unix sockets as `futures-io` streams are all it asks for. TLS (futures-rustls)
//! is written here, once.
//!
//! ## The drivers
//!
//! One task owns each connection and its whole stream (no split, no lock): it polls, in
//! order, finished handlers (server), the socket write, the socket read, the command or
//! push queue, the shutdown signals and one runtime timer re-armed only when the core's
//! next deadline moves earlier; every operation polled is cancel-safe. After each
//! wake-up it drains the machine's transmits and events until both are empty (the
//! server writes after at most 32 events, so responses leave while the rest of a large
//! read batch is handled). A handler that finishes without waiting is answered inline,
//! with no spawn. A driver yields to its executor after 64 wake-ups in a row without
//! waiting, so a connection whose socket is always ready cannot keep a worker.
//!
//! Queues between tasks and a driver are bounded but allocated on demand, so an idle
//! connection holds no queue memory.

mod client;
mod queue;
mod runtime;
mod server;
pub mod tls;
mod transport;
pub mod xclient;
mod xpool;
pub use xpool::{OneClient, XClientPool};

pub use client::{Client, ClientOptions, PendingCall, PushReceiver, RequestBuilder};
pub use rpcx_core::error::Error;
pub use runtime::{Runtime, Timer};
pub use server::{Server, ServerHandle, ServerOptions};
pub use transport::{LISTEN_BACKLOG, Stream, listen_tcp};
pub use xclient::{Receipt, XCall, XClient, XClientOptions, XRequestBuilder};
