//! Interop test support: the Rust implementation of the interop service contract.
