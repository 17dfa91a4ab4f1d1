//! What the registry interop tests (`tests/*_go.rs`) share: waiting for a discovery's
//! list, and calling a Go server through each runtime's XClient.

use rpcx_core::govern::Discovery;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `A`, `B` as the Go services decode them.
#[derive(serde::Serialize, serde::Deserialize)]
struct Args {
    #[serde(rename = "A")]
    a: i64,
    #[serde(rename = "B")]
    b: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reply {
    #[serde(rename = "C")]
    c: i64,
}

/// Wait (at most 10 s) until `d` lists exactly `want`, in order.
pub fn wait_keys(d: &dyn Discovery, want: &[&str], what: &str) {
    let t0 = Instant::now();
    loop {
        let keys: Vec<String> = d.snapshot().servers.iter().map(|s| s.key().to_string()).collect();
        if keys == want {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}: have {keys:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Arith.Mul` through an XClient of each runtime (tokio, smol, std) over `discovery`,
/// each answer checked.
pub fn mul_on_every_runtime(discovery: Arc<dyn Discovery>) {
    let tokio_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    tokio_rt.block_on(async {
        let xc = rpcx_tokio::XClient::new("Arith", discovery.clone(), Default::default());
        let r: Reply = xc.call("Mul", &Args { a: 6, b: 7 }).await.expect("tokio XClient -> Go server");
        assert_eq!(r.c, 42);
    });
    smol::block_on(async {
        let xc = rpcx_smol::XClient::new("Arith", discovery.clone(), Default::default());
        let r: Reply = xc.call("Mul", &Args { a: 3, b: 9 }).await.expect("smol XClient -> Go server");
        assert_eq!(r.c, 27);
    });
    let xc = rpcx_std::XClient::new("Arith", discovery, Default::default());
    let r: Reply = xc.call("Mul", &Args { a: 5, b: 5 }).expect("std XClient -> Go server");
    assert_eq!(r.c, 25);
}
