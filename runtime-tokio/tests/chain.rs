//! A chain of services: a handler calls another server with `.context(&ctx)`, so the
//! first caller's deadline reaches the end of the chain.

use rpcx_tokio::service::{Context, Router, Service};
use rpcx_tokio::{Client, ClientOptions, Server};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
#[serde(rename_all = "PascalCase")]
struct Args {
    a: i64,
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct Reply {
    c: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_passes_its_callers_deadline_on() {
    tokio::time::timeout(Duration::from_secs(30), async {
        // Back: how long its request has left (-1: no deadline); Slow waits A ms.
        let back = Server::new(
            Router::new().service(
                Service::new("Back")
                    .method("Left", |ctx: Context, _a: Args| async move {
                        Ok(Reply {
                            c: ctx
                                .deadline()
                                .map_or(-1, |d| d.saturating_duration_since(Instant::now()).as_millis() as i64),
                        })
                    })
                    .method("Slow", |_ctx: Context, a: Args| async move {
                        tokio::time::sleep(Duration::from_millis(a.a as u64)).await;
                        Ok(Reply { c: a.a })
                    }),
            ),
        )
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind back");
        let to_back = Arc::new(Client::connect(back.address(), ClientOptions::default()).await.expect("connect back"));
        // Front relays to Back, with or without its own context.
        let relay = |with_context: bool, method: &'static str| {
            let to_back = to_back.clone();
            move |ctx: Context, a: Args| {
                let to_back = to_back.clone();
                async move {
                    let req = to_back.request("Back", method);
                    let req = if with_context { req.context(&ctx) } else { req };
                    let r: Reply = req.call(&a).await?;
                    Ok(r)
                }
            }
        };
        let front = Server::new(
            Router::new().service(
                Service::new("Front")
                    .method("Left", relay(true, "Left"))
                    .method("LeftNoContext", relay(false, "Left"))
                    .method("Slow", relay(true, "Slow")),
            ),
        )
        .bind("tcp@127.0.0.1:0")
        .await
        .expect("bind front");
        let client = Client::connect(front.address(), ClientOptions::default()).await.expect("connect front");

        let r: Reply = client
            .request("Front", "Left")
            .timeout(Duration::from_millis(800))
            .call(&Args { a: 0 })
            .await
            .expect("relay");
        assert!((1..=800).contains(&r.c), "the deadline reached Back: {} ms left", r.c);
        let r: Reply = client
            .request("Front", "LeftNoContext")
            .timeout(Duration::from_millis(800))
            .call(&Args { a: 0 })
            .await
            .expect("relay");
        assert_eq!(r.c, -1, "without the context Back sees no deadline");

        // Back would take 5 s: the caller's call ends at its deadline.
        let t0 = Instant::now();
        let e = client
            .request("Front", "Slow")
            .timeout(Duration::from_millis(300))
            .call::<_, Reply>(&Args { a: 5000 })
            .await;
        assert!(e.is_err(), "timed out: {e:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "the chain honoured 300 ms");
        // Front still serves.
        let r: Reply = client
            .request("Front", "Left")
            .timeout(Duration::from_millis(800))
            .call(&Args { a: 0 })
            .await
            .expect("relay");
        assert!(r.c > 0);
    })
    .await
    .expect("test timed out");
}
