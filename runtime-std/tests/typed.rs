//! The typed layer on std: the book's Arith trait (`#[service]`, in
//! rpcx-examples-common) served, and called through its stub over a blocking `Client`
//! and `XClient` (`.call()`), in every serialize type.

use rpcx_examples_common::{Args, ArithClient, router};
use rpcx_std::core::govern::PeerDiscovery;
use rpcx_std::{Client, ClientOptions, SerializeType, Server, XClient, XClientOptions};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn the_arith_trait_and_its_stub_over_client_and_xclient() {
    let server = Server::new(router(None)).bind("tcp@127.0.0.1:0").expect("bind");
    let client = Client::connect(server.address(), ClientOptions::default()).expect("connect");
    let arith = ArithClient::new(&client);
    for st in [SerializeType::MSGPACK, SerializeType::JSON, SerializeType::PROTOBUF] {
        let r = arith.mul(Args { a: 6, b: 7 }).serialize_type(st).timeout(Duration::from_secs(5)).call();
        assert_eq!(r.expect("mul").c, 42, "{st:?}");
    }
    assert_eq!(arith.add(Args { a: 6, b: 7 }).call().expect("add").c, 13);
    let xc = XClient::new("Arith", Arc::new(PeerDiscovery::new(server.address(), "")), XClientOptions::default());
    let xarith = ArithClient::new(xc);
    assert_eq!(xarith.mul(Args { a: 3, b: 3 }).serialize_type(SerializeType::PROTOBUF).call().expect("x").c, 9);
    xarith.inner().close();
    client.close();
    server.close();
}
