//! The typed stubs (`ArithClient`, `ProtoArithClient`, written by `#[service]` from the
//! contract's traits in `rpcx_interop::services`) of every runtime against the real Go
//! rpcx server. The other direction (Go clients against the trait-based Rust services)
//! is every test in `go_client_rust_server.rs`: the Rust server's Arith and ProtoArith
//! are those traits.

use rpcx_interop::GoServer;
use rpcx_interop::services::{
    Args, ArithClient, ERR_SLOW_CONTEXT_DONE, ProtoArgs, ProtoArithClient, Reply, error_text,
};
use std::time::Duration;

#[test]
fn tokio_stubs_call_the_go_server() {
    let go = GoServer::tcp(None);
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime").block_on(
        async {
            let client = rpcx_tokio::Client::connect(&go.rpcx_addr(), Default::default()).await.expect("connect");
            let arith = ArithClient::new(&client);
            assert_eq!(arith.mul(Args { A: 6, B: 7 }).await.expect("mul"), Reply { C: 42 });
            assert_eq!(arith.add(Args { A: 6, B: 7 }).await.expect("add"), Reply { C: 13 });
            let e = arith.error(Args { A: 3, B: 0 }).await.expect_err("error");
            assert!(e.to_string().contains(&error_text(3)), "{e}");
            // Go's server is told the deadline (`__ServerTimeout`) and answers with its
            // context error at about the instant our own timer fails the call: either
            // may come first, but the call must end then, not when Slow would.
            let t0 = std::time::Instant::now();
            let e = arith.slow(Args { A: 5000, B: 0 }).timeout(Duration::from_millis(200)).await.expect_err("deadline");
            assert!(e.to_string().contains(ERR_SLOW_CONTEXT_DONE) || e.to_string().contains("call timed out"), "{e}");
            assert!(t0.elapsed() < Duration::from_secs(2), "the deadline ended the call after {:?}", t0.elapsed());
            let proto = ProtoArithClient::new(&client);
            for st in [rpcx_tokio::SerializeType::PROTOBUF, rpcx_tokio::SerializeType::JSON] {
                assert_eq!(
                    proto.mul(ProtoArgs { a: 4, b: 5 }).serialize_type(st).await.expect("proto").c,
                    20,
                    "{st:?}"
                );
            }
            client.close().await;
        },
    );
}

#[test]
fn smol_stubs_call_the_go_server() {
    let go = GoServer::tcp(None);
    smol::block_on(async {
        let client = rpcx_smol::Client::connect(&go.rpcx_addr(), Default::default()).await.expect("connect");
        let arith = ArithClient::new(&client);
        assert_eq!(arith.mul(Args { A: 6, B: 7 }).await.expect("mul"), Reply { C: 42 });
        let e = arith.error(Args { A: 9, B: 0 }).await.expect_err("error");
        assert!(e.to_string().contains(&error_text(9)), "{e}");
        let proto = ProtoArithClient::new(&client);
        assert_eq!(
            proto
                .mul(ProtoArgs { a: 4, b: 5 })
                .serialize_type(rpcx_smol::SerializeType::PROTOBUF)
                .await
                .expect("proto")
                .c,
            20
        );
        client.close().await;
    });
}

#[test]
fn std_stubs_call_the_go_server() {
    let go = GoServer::tcp(None);
    let client = rpcx_std::Client::connect(&go.rpcx_addr(), Default::default()).expect("connect");
    let arith = ArithClient::new(&client);
    assert_eq!(arith.mul(Args { A: 6, B: 7 }).call().expect("mul"), Reply { C: 42 });
    let e = arith.error(Args { A: 2, B: 0 }).call().expect_err("error");
    assert!(e.to_string().contains(&error_text(2)), "{e}");
    let proto = ProtoArithClient::new(&client);
    assert_eq!(
        proto.mul(ProtoArgs { a: 4, b: 5 }).serialize_type(rpcx_std::SerializeType::PROTOBUF).call().expect("proto").c,
        20
    );
    client.close();
}
