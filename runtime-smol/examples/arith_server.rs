//! The rpcx book's Arith server: `Arith.Mul` and `Arith.Add` over `{A, B}` -> `{C}` in
//! JSON, MsgPack and Protobuf, interoperable with Go's examples.
//!
//! ```text
//! cargo run -p rpcx-smol --example arith_server -- --addr localhost:8972 [--auth TOKEN]
//! ```
#![allow(clippy::print_stdout)]

mod common;

fn main() -> std::io::Result<()> {
    let addr = common::flag("--addr", "localhost:8972");
    let auth = Some(common::flag("--auth", "")).filter(|t| !t.is_empty());
    smol::block_on(async {
        let server = rpcx_smol::Server::new(common::router(auth)).bind(&addr).await?;
        println!("arith_server listening on {}", server.address());
        server.wait().await;
        Ok(())
    })
}
