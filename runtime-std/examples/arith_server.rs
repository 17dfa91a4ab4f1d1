//! The rpcx book's Arith server on blocking threads: `Arith.Mul` and `Arith.Add` over
//! `{A, B}` -> `{C}` in JSON, MsgPack and Protobuf, `Notify.Subscribe` (server push) and
//! `Echo.Meta` (metadata round trip); interoperable with Go's examples.
//!
//! ```text
//! cargo run -p rpcx-std --example arith_server -- --addr localhost:8972 [--auth TOKEN] [--threads N]
//! ```
//!
//! `--threads N`: the worker pool for handlers that wait (`ServerOptions::workers`,
//! default 64). There is no runtime to size: every connection has its own reader and
//! housekeeping threads, and handlers that do not wait (`Arith.*`) run on the reader.
#![allow(clippy::print_stdout)]

mod common;

fn main() -> std::io::Result<()> {
    let addr = common::flag("--addr", "localhost:8972");
    let auth = Some(common::flag("--auth", "")).filter(|t| !t.is_empty());
    let mut server = rpcx_std::Server::new(common::observed(common::router(auth)));
    if let Some(n) = common::threads_flag()? {
        server = server.workers(n);
    }
    let server = server.bind(&addr)?;
    println!("arith_server listening on {}", server.address());
    server.wait();
    Ok(())
}
