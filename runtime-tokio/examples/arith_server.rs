//! The rpcx book's Arith server: `Arith.Mul` and `Arith.Add` over `{A, B}` -> `{C}` in
//! JSON, MsgPack and Protobuf, interoperable with Go's examples.
//!
//! ```text
//! cargo run -p rpcx-tokio --example arith_server -- --addr localhost:8972 [--auth TOKEN] [--threads N]
//! ```
//!
//! `--threads N`: tokio worker threads (default: tokio's, one per CPU).
#![allow(clippy::print_stdout)]

mod common;

fn main() -> std::io::Result<()> {
    let addr = common::flag("--addr", "localhost:8972");
    let auth = Some(common::flag("--auth", "")).filter(|t| !t.is_empty());
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = common::threads_flag()? {
        rt.worker_threads(n);
    }
    rt.enable_all().build()?.block_on(async {
        let server = rpcx_tokio::Server::new(common::observed(common::router(auth))).bind(&addr).await?;
        println!("arith_server listening on {}", server.address());
        server.wait().await;
        Ok(())
    })
}
