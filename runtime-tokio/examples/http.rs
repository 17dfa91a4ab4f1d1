//! HTTP on the rpcx port: the Arith server answers rpcx, the X-RPCX HTTP gateway,
//! JSON-RPC 2.0, rpcx tunnelled through HTTP CONNECT and rpcx over WebSocket, all on
//! one port (Go's server needs a port per transport for the last two). The HTTP calls
//! below are what curl sends:
//!
//! ```text
//! curl -s http://127.0.0.1:8972/ -H 'X-RPCX-ServicePath: Arith' -H 'X-RPCX-ServiceMethod: Mul' \
//!      -H 'X-RPCX-SerializeType: 1' -d '{"A":6,"B":7}'
//! curl -s http://127.0.0.1:8972/ -H 'X-JSONRPC-2.0: true' \
//!      -d '{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":6,"B":7},"id":1}'
//! ```
//!
//! ```text
//! cargo run -p rpcx-tokio --example http
//! ```
#![allow(clippy::print_stdout)]

mod common;

use common::{Args, ArithClient};
use rpcx_tokio::{Client, ClientOptions, Server};
use std::io::{Read, Write};
use std::net::TcpStream;

/// One HTTP/1.1 request with `Connection: close`; the whole response as text.
fn http(addr: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    let mut req = format!("POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(common::router(None)).bind("tcp@127.0.0.1:0").await?;
    let addr = server.local_addr().expect("a TCP server").to_string();
    println!("server listening on {} (rpcx, HTTP gateway, JSON-RPC, CONNECT, WebSocket)", server.address());

    let gateway = [("X-RPCX-ServicePath", "Arith"), ("X-RPCX-ServiceMethod", "Mul"), ("X-RPCX-SerializeType", "1")];
    let a = addr.clone();
    let reply = tokio::task::spawn_blocking(move || http(&a, &gateway, r#"{"A":6,"B":7}"#)).await??;
    println!("--- gateway: POST / with X-RPCX headers\n{reply}\n");
    assert!(reply.starts_with("HTTP/1.1 200 OK") && reply.ends_with(r#"{"C":42}"#));

    let a = addr.clone();
    let reply = tokio::task::spawn_blocking(move || {
        http(
            &a,
            &[("X-JSONRPC-2.0", "true")],
            r#"{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":6,"B":7},"id":1}"#,
        )
    })
    .await??;
    println!("--- JSON-RPC 2.0\n{reply}\n");
    assert!(reply.ends_with(r#"{"jsonrpc":"2.0","result":{"C":42},"id":1}"#));

    // An rpcx client through an HTTP CONNECT tunnel: just an `http@` address.
    let client = Client::connect(&format!("http@{addr}"), ClientOptions::default()).await?;
    let r = ArithClient::new(&client).mul(Args { a: 6, b: 7 }).await?;
    println!("--- rpcx over CONNECT (http@{addr}): Arith.Mul(6, 7) = {}", r.c);
    assert_eq!(r.c, 42);

    // And through WebSocket: a `ws@` address (`wss@` with TLS settings).
    let client = Client::connect(&format!("ws@{addr}"), ClientOptions::default()).await?;
    let r = ArithClient::new(&client).mul(Args { a: 7, b: 8 }).await?;
    println!("--- rpcx over WebSocket (ws@{addr}): Arith.Mul(7, 8) = {}", r.c);
    assert_eq!(r.c, 56);

    server.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
