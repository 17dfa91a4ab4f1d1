//! rpcx on the tokio runtime: `Client`, `Server` and `XClient` driving the sans-IO
//! machines of [`rpcx_core`].
//!
//! Status: not built yet; this crate only re-exports the core until its issue lands.

pub use rpcx_core as core;
