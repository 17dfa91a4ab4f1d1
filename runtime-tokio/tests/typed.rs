//! The typed layer on tokio: a service written as a trait with `#[rpcx_tokio::service]`,
//! served, and called through its generated stub over a `Client` and an `XClient`.

use rpcx_tokio::service::{Context, Router, ServiceError};
use rpcx_tokio::{Client, ClientOptions, SerializeType, Server, XClient, XClientOptions};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "PascalCase")]
struct Args {
    a: i64,
    b: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
struct Reply {
    c: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoArgs {
    #[prost(int64, tag = "1")]
    a: i64,
    #[prost(int64, tag = "2")]
    b: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoReply {
    #[prost(int64, tag = "1")]
    c: i64,
}

#[rpcx_tokio::service(name = "Arith")]
trait Arith {
    async fn mul(&self, ctx: &Context, args: Args) -> Result<Reply, ServiceError>;
    #[rpcx(name = "Add")]
    async fn plus(&self, args: Args) -> Result<Reply, ServiceError>;
    async fn div(&self, args: Args) -> Result<Reply, ServiceError>;
    async fn deadline_left_ms(&self, ctx: &Context, args: Args) -> Result<Reply, ServiceError>;
    #[rpcx(proto)]
    async fn proto_mul(&self, args: ProtoArgs) -> Result<ProtoReply, ServiceError>;
}

struct Calc {
    calls: AtomicI64,
}

impl Arith for Calc {
    async fn mul(&self, ctx: &Context, args: Args) -> Result<Reply, ServiceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(ctx.service_method(), "Mul");
        Ok(Reply { c: args.a * args.b })
    }

    async fn plus(&self, args: Args) -> Result<Reply, ServiceError> {
        Ok(Reply { c: args.a + args.b })
    }

    async fn div(&self, args: Args) -> Result<Reply, ServiceError> {
        if args.b == 0 {
            return Err("divide by zero".into());
        }
        Ok(Reply { c: args.a / args.b })
    }

    async fn deadline_left_ms(&self, ctx: &Context, _args: Args) -> Result<Reply, ServiceError> {
        let left =
            ctx.deadline().map_or(-1, |d| d.saturating_duration_since(std::time::Instant::now()).as_millis() as i64);
        Ok(Reply { c: left })
    }

    async fn proto_mul(&self, args: ProtoArgs) -> Result<ProtoReply, ServiceError> {
        Ok(ProtoReply { c: args.a * args.b })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trait_service_and_its_stub_over_client_and_xclient() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let server = Server::new(Router::new().service(Calc { calls: AtomicI64::new(0) }.into_service()))
            .bind("tcp@127.0.0.1:0")
            .await
            .expect("bind");
        let client = Client::connect(server.address(), ClientOptions::default()).await.expect("connect");
        let arith = ArithClient::new(&client);
        assert_eq!(arith.mul(Args { a: 6, b: 7 }).await.expect("mul"), Reply { c: 42 });
        // Go's method names: `plus` is registered as "Add" (the override), `deadline_left_ms`
        // as "DeadlineLeftMs".
        assert_eq!(arith.plus(Args { a: 6, b: 7 }).await.expect("add"), Reply { c: 13 });
        let raw =
            client.request("Arith", "DeadlineLeftMs").call::<_, Reply>(&Args { a: 0, b: 0 }).await.expect("by name");
        assert_eq!(raw.c, -1);
        // Per-call options: a timeout reaches the handler as its deadline; another serialize type.
        let left =
            arith.deadline_left_ms(Args { a: 0, b: 0 }).timeout(Duration::from_millis(900)).await.expect("deadline");
        assert!((1..=900).contains(&left.c), "{left:?}");
        let json = arith.mul(Args { a: 2, b: 3 }).serialize_type(SerializeType::JSON).metadata("k", "v").await;
        assert_eq!(json.expect("json"), Reply { c: 6 });
        // The handler's error text comes back as the service error.
        let e = arith.div(Args { a: 1, b: 0 }).await.expect_err("error");
        assert!(e.to_string().contains("divide by zero"), "{e}");
        // Protobuf messages as arguments and reply.
        assert_eq!(arith.proto_mul(ProtoArgs { a: 4, b: 5 }).await.expect("proto").c, 20);

        // The same stub over an XClient (and owning it, through an Arc).
        let xc = Arc::new(XClient::new(
            "Arith",
            Arc::new(rpcx_tokio::core::govern::PeerDiscovery::new(server.address(), "")),
            XClientOptions::default(),
        ));
        let xarith = ArithClient::new(xc.clone());
        assert_eq!(xarith.mul(Args { a: 3, b: 3 }).await.expect("xclient mul"), Reply { c: 9 });
        assert_eq!(xarith.proto_mul(ProtoArgs { a: 2, b: 8 }).await.expect("xclient proto").c, 16);
        xc.close().await;
        client.close().await;
        server.close().await;
    })
    .await
    .expect("bounded");
}
