//! The shared example service and flags (crate `rpcx-examples-common`).
#![allow(unused_imports, unreachable_pub)]

pub use rpcx_examples_common::*;
