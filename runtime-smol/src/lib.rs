//! rpcx on `futures-io` + `async-io`: runs on the smol and async-std executors.
//!
//! Status: not built yet; this crate only re-exports the core until its issue lands.

pub use rpcx_core as core;
