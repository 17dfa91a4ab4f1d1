//! The rpcx book's Arith client, blocking: a plain call, Go-style `go` calls, a metadata
//! round trip, oneway, server push, and auth.
//!
//! ```text
//! cargo run -p rpcx-std --example arith_server -- --addr localhost:8972 &
//! cargo run -p rpcx-std --example arith_client -- --addr localhost:8972 [--auth TOKEN]
//! ```
#![allow(clippy::print_stdout)]

mod common;

use common::{Args, ArithClient, Reply};
use rpcx_std::core::stub::{CallClient, StubCall, StubCodec};
use rpcx_std::{Client, ClientOptions, SerializeType};
use std::time::Duration;

/// Add the `__AUTH` token when one was given.
fn authed<'a>(b: rpcx_std::RequestBuilder<'a>, auth: &str) -> rpcx_std::RequestBuilder<'a> {
    if auth.is_empty() { b } else { b.metadata("__AUTH", auth) }
}

/// The same for a typed call.
fn token<'c, C, A, R, K>(call: StubCall<'c, C, A, R, K>, auth: &str) -> StubCall<'c, C, A, R, K>
where
    C: CallClient,
    K: StubCodec<A, R>,
{
    if auth.is_empty() { call } else { call.metadata("__AUTH", auth) }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = common::flag("--addr", "localhost:8972");
    let auth = common::flag("--auth", "");
    let client = Client::connect(&addr, ClientOptions::default())?;
    let with_auth = |b| authed(b, &auth);

    // The typed stub of the Arith trait (`#[service]` in rpcx-examples-common): a plain
    // call (MsgPack, Go's default), then JSON and Protobuf as a per-call option.
    let arith = ArithClient::new(&client);
    let reply = token(arith.mul(Args { a: 10, b: 20 }), &auth).call()?;
    println!("Arith.Mul 10*20 = {}", reply.c);
    for st in [SerializeType::JSON, SerializeType::PROTOBUF] {
        let reply = token(arith.add(Args { a: 1, b: 2 }), &auth).serialize_type(st).call()?;
        println!("Arith.Add 1+2 = {} ({st:?})", reply.c);
    }

    // The untyped API underneath, by name.
    let reply: Reply = with_auth(client.request("Arith", "Mul")).call(&Args { a: 3, b: 4 })?;
    println!("by name: Arith.Mul 3*4 = {}", reply.c);

    // Go-style: start several calls, then wait for them.
    let mut pending = Vec::new();
    for i in 0..5 {
        pending.push(with_auth(client.request("Arith", "Mul")).go::<_, Reply>(&Args { a: i, b: i })?);
    }
    for (i, p) in pending.into_iter().enumerate() {
        println!("go Arith.Mul {i}*{i} = {}", p.wait()?.c);
    }

    // Metadata both ways, with a deadline the server sees in __ServerTimeout.
    let (reply, meta): (Reply, _) = with_auth(client.request("Echo", "Meta"))
        .metadata("trace", "abc123")
        .timeout(Duration::from_secs(2))
        .call_with_metadata(&Args { a: 2, b: 3 })?;
    println!("Echo.Meta = {}, response metadata trace={:?}", reply.c, meta.get_str("trace")?);

    // Oneway: completes once the request is on the wire.
    with_auth(client.request("Arith", "Mul")).oneway(&Args { a: 1, b: 1 })?;
    println!("oneway sent");

    // Server push: the server pushes three ticks to this connection.
    let pushes = client.take_push_receiver().expect("first take");
    let reply: Reply = with_auth(client.request("Notify", "Subscribe")).call(&Args { a: 3, b: 0 })?;
    for _ in 0..reply.c {
        let msg = pushes.recv_timeout(Duration::from_secs(2)).ok_or("no push within 2 s")?;
        println!(
            "push {}.{}: {}",
            msg.service_path_str()?,
            msg.service_method_str()?,
            String::from_utf8_lossy(&msg.payload)
        );
    }

    // Auth: a wrong token is refused and the server closes the connection.
    if !auth.is_empty() {
        let other = Client::connect(&addr, ClientOptions::default())?;
        let err = other.request("Arith", "Mul").metadata("__AUTH", "wrong").call::<_, Reply>(&Args { a: 1, b: 1 });
        println!("wrong token: {}", err.err().map(|e| e.to_string()).unwrap_or_default());
    }

    client.close();
    Ok(())
}
