//! The shared example service and flags (crate `rpcx-examples-common`), plus a timeout
//! helper for these examples.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub use rpcx_examples_common::*;

use std::time::Duration;

/// `None` if `fut` did not finish within `d`.
pub async fn timeout<T>(d: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        async_io::Timer::after(d).await;
        None
    })
    .await
}
