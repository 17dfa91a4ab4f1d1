//! The request builder's `deadline` and `strict_decoding` on `Client` and `XClient` of
//! every runtime, against every server runtime: a deadline bounds the call (the earlier
//! of deadline and timeout wins), and a reply that lacks a field decodes as Go would
//! (zero) by default and fails under strict decoding.

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::services::{self, Args, Reply};
use rpcx_conformance::{ServeOpts, ServerRt};
use rpcx_core::govern::{Instance, MultiDiscovery};
use rpcx_core::wire::SerializeType;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An empty JSON object: the `Raw` method echoes it, so the reply lacks `C`.
#[derive(serde::Serialize)]
struct Empty {}

const SLOW: Args = Args { a: 2000, b: 0 };
const SOON: Duration = Duration::from_millis(200);
/// A deadline of 200 ms must end a 2 s call well before the 2 s.
const BOUND: Duration = Duration::from_millis(1200);

/// What each client runtime reports, in one shape.
struct Seen {
    /// (elapsed, timed out) of a slow call with `.deadline(now + 200 ms)` and a 10 s timeout.
    deadline: (Duration, bool),
    /// The `{}` reply decoded as Go would.
    lenient: Result<i64, String>,
    /// The `{}` reply under strict decoding.
    strict: Result<i64, String>,
}

type Probe = fn(&str) -> (Seen, Seen);

fn tokio_probe(addr: &str) -> (Seen, Seen) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let c = rpcx_tokio::Client::connect(addr, Default::default()).await.expect("connect");
        let t0 = Instant::now();
        let r = c.request("Arith", "Slow").timeout(Duration::from_secs(10)).deadline(t0 + SOON).call::<_, Reply>(&SLOW);
        let r = r.await;
        let deadline = (t0.elapsed(), r.as_ref().is_err_and(|e| e.is_timeout()));
        let raw = || c.request("Echo", "Raw").serialize_type(SerializeType::JSON);
        let lenient = raw().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        let strict = raw().strict_decoding().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        let client = Seen { deadline, lenient, strict };

        let d = Arc::new(MultiDiscovery::new([Instance::new(addr, "")]));
        let xc = rpcx_tokio::XClient::new("Arith", d.clone(), Default::default());
        let t0 = Instant::now();
        let r = xc.request("Slow").timeout(Duration::from_secs(10)).deadline(t0 + SOON).call::<_, Reply>(&SLOW).await;
        let deadline = (t0.elapsed(), r.as_ref().is_err_and(|e| e.is_timeout()));
        let echo = rpcx_tokio::XClient::new("Echo", d.clone(), Default::default());
        let raw = || echo.request("Raw").serialize_type(SerializeType::JSON);
        let lenient = raw().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        let strict = raw().strict_decoding().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        xc.close().await;
        echo.close().await;
        c.close_now().await;
        (client, Seen { deadline, lenient, strict })
    })
}

fn smol_probe(addr: &str) -> (Seen, Seen) {
    smol::block_on(async {
        let c = rpcx_smol::Client::connect(addr, Default::default()).await.expect("connect");
        let t0 = Instant::now();
        let r = c.request("Arith", "Slow").timeout(Duration::from_secs(10)).deadline(t0 + SOON).call::<_, Reply>(&SLOW);
        let r = r.await;
        let deadline = (t0.elapsed(), r.as_ref().is_err_and(|e| e.is_timeout()));
        let raw = || c.request("Echo", "Raw").serialize_type(SerializeType::JSON);
        let lenient = raw().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        let strict = raw().strict_decoding().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        let client = Seen { deadline, lenient, strict };

        let d = Arc::new(MultiDiscovery::new([Instance::new(addr, "")]));
        let xc = rpcx_smol::XClient::new("Arith", d.clone(), Default::default());
        let t0 = Instant::now();
        let r = xc.request("Slow").timeout(Duration::from_secs(10)).deadline(t0 + SOON).call::<_, Reply>(&SLOW).await;
        let deadline = (t0.elapsed(), r.as_ref().is_err_and(|e| e.is_timeout()));
        let echo = rpcx_smol::XClient::new("Echo", d.clone(), Default::default());
        let raw = || echo.request("Raw").serialize_type(SerializeType::JSON);
        let lenient = raw().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        let strict = raw().strict_decoding().call::<_, Reply>(&Empty {}).await.map(|r| r.c).map_err(|e| e.to_string());
        xc.close().await;
        echo.close().await;
        c.close_now().await;
        (client, Seen { deadline, lenient, strict })
    })
}

fn std_probe(addr: &str) -> (Seen, Seen) {
    let c = rpcx_std::Client::connect(addr, Default::default()).expect("connect");
    let t0 = Instant::now();
    let r = c.request("Arith", "Slow").timeout(Duration::from_secs(10)).deadline(t0 + SOON).call::<_, Reply>(&SLOW);
    let deadline = (t0.elapsed(), r.as_ref().is_err_and(|e| e.is_timeout()));
    let raw = || c.request("Echo", "Raw").serialize_type(SerializeType::JSON);
    let lenient = raw().call::<_, Reply>(&Empty {}).map(|r| r.c).map_err(|e| e.to_string());
    let strict = raw().strict_decoding().call::<_, Reply>(&Empty {}).map(|r| r.c).map_err(|e| e.to_string());
    let client = Seen { deadline, lenient, strict };

    let d = Arc::new(MultiDiscovery::new([Instance::new(addr, "")]));
    let xc = rpcx_std::XClient::new("Arith", d.clone(), Default::default());
    let t0 = Instant::now();
    let r = xc.request("Slow").timeout(Duration::from_secs(10)).deadline(t0 + SOON).call::<_, Reply>(&SLOW);
    let deadline = (t0.elapsed(), r.as_ref().is_err_and(|e| e.is_timeout()));
    let echo = rpcx_std::XClient::new("Echo", d.clone(), Default::default());
    let raw = || echo.request("Raw").serialize_type(SerializeType::JSON);
    let lenient = raw().call::<_, Reply>(&Empty {}).map(|r| r.c).map_err(|e| e.to_string());
    let strict = raw().strict_decoding().call::<_, Reply>(&Empty {}).map(|r| r.c).map_err(|e| e.to_string());
    xc.close();
    echo.close();
    c.close_now();
    (client, Seen { deadline, lenient, strict })
}

fn check(server: &dyn ServerRt, name: &str, probe: Probe) {
    let s = server.serve(services::router(false), ServeOpts::default());
    let (client, xclient) = probe(&s.address());
    for (what, seen) in [("Client", client), ("XClient", xclient)] {
        let pair = format!("{name} {what} -> {} server", server.name());
        let (took, timed_out) = seen.deadline;
        assert!(timed_out, "{pair}: the deadline did not end the call");
        assert!(took >= SOON && took < BOUND, "{pair}: ended after {took:?}");
        assert_eq!(seen.lenient, Ok(0), "{pair}: a missing field reads as zero");
        let err = seen.strict.expect_err("strict decoding refuses a missing field");
        assert!(err.contains("missing field"), "{pair}: {err}");
    }
    s.close();
}

macro_rules! pairs {
    ($($test:ident: $server:expr, $probe:ident;)*) => {$(
        #[test]
        fn $test() {
            check(&$server, stringify!($probe), $probe);
        }
    )*};
}

pairs! {
    tokio_tokio: Tokio, tokio_probe;
    tokio_smol: Smol, tokio_probe;
    tokio_std: Std, tokio_probe;
    smol_tokio: Tokio, smol_probe;
    smol_smol: Smol, smol_probe;
    smol_std: Std, smol_probe;
    std_tokio: Tokio, std_probe;
    std_smol: Smol, std_probe;
    std_std: Std, std_probe;
}
