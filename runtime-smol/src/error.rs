//! The client error type, shared by every runtime crate (defined in `rpcx-core`).

pub use rpcx_core::error::Error;
