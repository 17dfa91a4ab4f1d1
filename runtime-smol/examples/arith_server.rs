//! The rpcx book's Arith server: `Arith.Mul` and `Arith.Add` over `{A, B}` -> `{C}` in
//! JSON, MsgPack and Protobuf, interoperable with Go's examples.
//!
//! ```text
//! cargo run -p rpcx-smol --example arith_server -- --addr localhost:8972 [--auth TOKEN] [--threads N]
//! ```
//!
//! The server's tasks run on the crate's default spawner, the `async-global-executor`
//! pool; `--threads N` sizes that pool (default: `ASYNC_GLOBAL_EXECUTOR_THREADS` or one
//! thread per CPU).
#![allow(clippy::print_stdout)]

mod common;

fn main() -> std::io::Result<()> {
    let addr = common::flag("--addr", "localhost:8972");
    let auth = Some(common::flag("--auth", "")).filter(|t| !t.is_empty());
    if let Some(n) = common::threads_flag()? {
        async_global_executor::init_with_config(
            async_global_executor::GlobalExecutorConfig::default().with_min_threads(n).with_max_threads(n),
        );
    }
    smol::block_on(async {
        let server = rpcx_smol::Server::new(common::observed(common::router(auth))).bind(&addr).await?;
        println!("arith_server listening on {}", server.address());
        server.wait().await;
        Ok(())
    })
}
