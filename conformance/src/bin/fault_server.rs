//! A server process for the kill -9 test (`tests/kill_restart.rs`): serves service `X`
//! (`rpcx_conformance::xclient::router`) on the given runtime and address, prints the
//! address once bound, and runs until killed.
//!
//! ```sh
//! cargo run -p rpcx-conformance --bin fault_server -- tokio tcp@127.0.0.1:0
//! ```
#![allow(clippy::print_stdout)]

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::xclient::{Gate, router};
use rpcx_conformance::{ServeOpts, ServerRt};
use std::io::Write;
use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let rt: Box<dyn ServerRt> = match args.next().as_deref() {
        Some("tokio") => Box::new(Tokio),
        Some("smol") => Box::new(Smol),
        Some("std") => Box::new(Std),
        _ => {
            eprintln!("usage: fault_server tokio|smol|std ADDR");
            std::process::exit(2);
        }
    };
    let addr = args.next().unwrap_or_else(|| "tcp@127.0.0.1:0".to_owned());
    let server = rt.serve(router(1, Arc::new(Gate::default())), ServeOpts { addr: Some(addr), ..Default::default() });
    println!("{}", server.address());
    std::io::stdout().flush().expect("stdout");
    loop {
        std::thread::park();
    }
}
