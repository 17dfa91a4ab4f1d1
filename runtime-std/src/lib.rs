//! rpcx over blocking `std::net` sockets and threads, with no async runtime inside.
//!
//! Status: not built yet; this crate only re-exports the core until its issue lands.

pub use rpcx_core as core;
