//! A call whose caller gives up (drops its future or its `PendingCall`) is cancelled at
//! once on every client runtime, so its in-flight room is free for the next call. Run
//! for every client runtime against every server runtime. (The async clients used to
//! find such calls with a sweep once a second, rpcx-std at once.)

use rpcx_conformance::runtimes::{Smol, Std, Tokio};
use rpcx_conformance::services::{self, Args, Reply};
use rpcx_conformance::{ServeOpts, ServerRt};
use rpcx_core::conn::ClientConfig;
use std::time::{Duration, Instant};

/// One call in flight at most, so a call nobody cancels holds up the next one.
fn one_in_flight() -> ClientConfig {
    ClientConfig { max_in_flight: 1, ..ClientConfig::default() }
}

/// The slow call the caller abandons (the server takes 3 s), and how long it waits.
const SLOW: Args = Args { a: 3000, b: 0 };
const GIVE_UP: Duration = Duration::from_millis(100);
/// The next call must not wait for a sweep (1 s) or for the slow call (3 s).
const PROMPT: Duration = Duration::from_millis(600);

/// Abandon a slow call, then time a normal call on the same connection.
type Client = fn(&str) -> Duration;

fn tokio_client(addr: &str) -> Duration {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let opts = rpcx_tokio::ClientOptions { connection: one_in_flight(), ..Default::default() };
        let client = rpcx_tokio::Client::connect(addr, opts).await.expect("connect");
        let slow = client.call::<_, Reply>("Arith", "Slow", &SLOW);
        assert!(tokio::time::timeout(GIVE_UP, slow).await.is_err(), "the slow call is still running");
        let t0 = Instant::now();
        let r: Reply = client.call("Arith", "Mul", &Args { a: 6, b: 7 }).await.expect("next call");
        assert_eq!(r.c, 42);
        let took = t0.elapsed();
        client.close_now().await;
        took
    })
}

fn smol_client(addr: &str) -> Duration {
    smol::block_on(async {
        let opts = rpcx_smol::ClientOptions { connection: one_in_flight(), ..Default::default() };
        let client = rpcx_smol::Client::connect(addr, opts).await.expect("connect");
        let slow = async { Some(client.call::<_, Reply>("Arith", "Slow", &SLOW).await) };
        let gave_up = futures_lite::future::or(slow, async {
            async_io::Timer::after(GIVE_UP).await;
            None
        });
        assert!(gave_up.await.is_none(), "the slow call is still running");
        let t0 = Instant::now();
        let r: Reply = client.call("Arith", "Mul", &Args { a: 6, b: 7 }).await.expect("next call");
        assert_eq!(r.c, 42);
        let took = t0.elapsed();
        client.close_now().await;
        took
    })
}

fn std_client(addr: &str) -> Duration {
    let opts = rpcx_std::ClientOptions { connection: one_in_flight(), ..Default::default() };
    let client = rpcx_std::Client::connect(addr, opts).expect("connect");
    let slow = client.go::<_, Reply>("Arith", "Slow", &SLOW).expect("started");
    std::thread::sleep(GIVE_UP);
    drop(slow);
    let t0 = Instant::now();
    let r: Reply = client.call("Arith", "Mul", &Args { a: 6, b: 7 }).expect("next call");
    assert_eq!(r.c, 42);
    let took = t0.elapsed();
    client.close_now();
    took
}

fn check(server: &dyn ServerRt, name: &str, client: Client) {
    let s = server.serve(services::router(false), ServeOpts::default());
    let took = client(&s.address());
    assert!(took < PROMPT, "{name} client -> {} server: the next call waited {took:?}", server.name());
    s.close();
}

macro_rules! pairs {
    ($($test:ident: $server:expr, $client:ident;)*) => {$(
        #[test]
        fn $test() {
            check(&$server, stringify!($client), $client);
        }
    )*};
}

pairs! {
    tokio_client_tokio_server: Tokio, tokio_client;
    tokio_client_smol_server: Smol, tokio_client;
    tokio_client_std_server: Std, tokio_client;
    smol_client_tokio_server: Tokio, smol_client;
    smol_client_smol_server: Smol, smol_client;
    smol_client_std_server: Std, smol_client;
    std_client_tokio_server: Tokio, std_client;
    std_client_smol_server: Smol, std_client;
    std_client_std_server: Std, std_client;
}
