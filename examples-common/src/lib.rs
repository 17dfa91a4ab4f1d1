//! Shared by every runtime's examples: the rpcx book's Arith service with Go-compatible
//! field names (`A`, `B`, `C`), serving JSON, MsgPack and Protobuf. It is written once,
//! against `rpcx-core`'s service layer, and serves on tokio, smol and std alike.

use rpcx_core::service::{Context, Router, Service, ServiceError};
use std::time::Duration;

/// Go's `Args{A, B int}`; also a protobuf message (fields 1 and 2). Typed handlers
/// decode it as Go does (`rpcx_core::codec::Decoding::Go`): a missing field is zero,
/// JSON keys match in any case, the last duplicate wins; no `#[serde(default)]` needed.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Args {
    /// `A`.
    #[prost(int64, tag = "1")]
    #[serde(rename = "A")]
    pub a: i64,
    /// `B`.
    #[prost(int64, tag = "2")]
    #[serde(rename = "B")]
    pub b: i64,
}

/// Go's `Reply{C int}`.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// `C`.
    #[prost(int64, tag = "1")]
    #[serde(rename = "C")]
    pub c: i64,
}

/// The rpcx book's Arith service, as a trait: `#[service]` registers it (`Arith.Mul`,
/// `Arith.Add`, every serialize type: its types are serde and prost types) and writes
/// the typed client [`ArithClient`], used over any runtime's `Client` or `XClient`:
/// `ArithClient::new(&client).mul(Args { a: 7, b: 6 }).await` (`.call()` on std).
#[rpcx_macros::service(name = "Arith")]
pub trait Arith {
    /// `A * B`.
    #[rpcx(serde, proto)]
    async fn mul(&self, args: Args) -> Result<Reply, ServiceError>;
    /// `A + B`.
    #[rpcx(serde, proto)]
    async fn add(&self, args: Args) -> Result<Reply, ServiceError>;
}

/// The implementation of [`Arith`] the examples serve.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

impl Arith for Calculator {
    async fn mul(&self, a: Args) -> Result<Reply, ServiceError> {
        Ok(Reply { c: a.a.wrapping_mul(a.b) })
    }

    async fn add(&self, a: Args) -> Result<Reply, ServiceError> {
        Ok(Reply { c: a.a.wrapping_add(a.b) })
    }
}

/// `Arith.Mul`, `Arith.Add` ([`Calculator`]), `Notify.Subscribe` (pushes `A` messages to
/// the caller), `Echo.Meta` (metadata back) and `Echo.Raw` (raw payload back).
pub fn router(auth: Option<String>) -> Router {
    let arith = Calculator.into_service();
    let notify = Service::new("Notify").method("Subscribe", |ctx: Context, a: Args| async move {
        for i in 1..=a.a {
            ctx.pusher().push("Notify", "Tick", Default::default(), format!("tick {i}")).map_err(|e| e.to_string())?;
        }
        Ok(Reply { c: a.a })
    });
    let echo = Service::new("Echo")
        .method("Meta", |ctx: Context, a: Args| async move {
            for (k, v) in ctx.metadata().iter() {
                if !k.starts_with(b"__") {
                    ctx.set_response_metadata(k.clone(), v.clone());
                }
            }
            Ok(Reply { c: a.a.wrapping_add(a.b) })
        })
        // The payload back as it came (as the Go interop server has it); `rpcx bench`
        // calls it by default.
        .raw_method("Raw", |_ctx: Context, payload: rpcx_core::bytes::Bytes| async move { Ok(payload) });
    let router = Router::new().service(arith).service(notify).service(echo);
    match auth {
        None => router,
        Some(token) => router.auth(move |_ctx, got| {
            let ok = got == token;
            async move { if ok { Ok(()) } else { Err("auth failed".to_owned()) } }
        }),
    }
}

/// `--name value` from the command line, or the default.
pub fn flag(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_owned)))
        .unwrap_or_else(|| default.to_owned())
}

/// `--threads N` for the servers: `None` when absent or 0 (the runtime's own default),
/// an `InvalidInput` error when it is not a number.
pub fn threads_flag() -> std::io::Result<Option<usize>> {
    let v = flag("--threads", "0");
    let n: usize =
        v.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--threads {v}: {e}")))?;
    Ok(Some(n).filter(|&n| n > 0))
}

/// Seconds as a `Duration`, from a flag.
pub fn secs_flag(name: &str, default: f64) -> Duration {
    Duration::from_secs_f64(flag(name, &default.to_string()).parse().unwrap_or(default))
}

/// A fresh self-signed certificate for `localhost`, as a rustls server config and a
/// client config that trusts it (ring provider, like every runtime's `tls::provider`).
/// For tests and examples; every runtime takes these rustls types as they are.
pub fn self_signed_localhost_tls() -> (std::sync::Arc<rustls::ServerConfig>, std::sync::Arc<rustls::ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (std::sync::Arc::new(server), std::sync::Arc::new(client))
}

/// What `RPCX_OBSERVE` asks the example servers to add, for measuring what observing a
/// server costs (`scripts/server-cpu.sh` with `OBSERVE=...`): a comma-separated list of
/// `hooks` (a hook that implements every server hook, doing nothing: the cost of
/// running hooks) and `trace=FILTER` (a `tracing` subscriber with that filter, e.g.
/// `info` or `rpcx=debug`, formatting to nowhere: the cost of spans at that level) and
/// `metrics` (rpcx-metrics' `MetricsHooks` recording into metrics-exporter-prometheus's
/// recorder, rendered once a second by a thread of its own as a scrape would, not served).
/// Unset or empty: the router as it is.
pub fn observed(router: Router) -> Router {
    let spec = std::env::var("RPCX_OBSERVE").unwrap_or_default();
    let mut router = router;
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "hooks" {
            router = router.hook(std::sync::Arc::new(EveryHook));
        } else if part == "metrics" {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                std::thread::spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                        let _ = handle.render();
                    }
                });
            }
            router = router.hook(std::sync::Arc::new(rpcx_metrics::MetricsHooks::new()));
        } else if let Some(filter) = part.strip_prefix("trace=") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
                .with_writer(std::io::sink)
                .try_init();
        } else {
            eprintln!("RPCX_OBSERVE: unknown part {part:?} (hooks, metrics, trace=FILTER)");
        }
    }
    router
}

/// Implements every server hook and does nothing in them.
struct EveryHook;

impl rpcx_core::service::ServerHooks for EveryHook {
    fn register(&self, _s: &str, _m: &str) -> Result<(), String> {
        Ok(())
    }
    fn conn_accepted(&self, _p: &rpcx_core::service::Peer, _now: std::time::Instant) -> Result<(), String> {
        Ok(())
    }
    fn conn_closed(&self, _p: &rpcx_core::service::Peer) {}
    fn pre_read_request(
        &self,
        _p: &rpcx_core::service::Peer,
        _h: &rpcx_core::wire::Header,
    ) -> Result<(), rpcx_core::service::Rejection> {
        Ok(())
    }
    fn rewrite_request(
        &self,
        _r: &mut rpcx_core::service::RequestHead<'_>,
    ) -> Result<(), rpcx_core::service::Rejection> {
        Ok(())
    }
    fn post_read_request(&self, _c: &Context) -> Result<(), rpcx_core::service::Rejection> {
        Ok(())
    }
    fn admit(&self, _c: &Context) -> rpcx_core::service::Admit {
        rpcx_core::service::Admit::Now
    }
    fn pre_handle(&self, _c: &Context) -> Result<(), String> {
        Ok(())
    }
    fn pre_call(&self, _c: &Context) -> Result<(), String> {
        Ok(())
    }
    fn post_call(&self, _c: &Context, _r: &mut Result<bytes::Bytes, String>) {}
    fn pre_write_response(&self, _c: &Context, _r: &mut rpcx_core::conn::Response) {}
    fn post_write_response(&self, _c: &Context, _r: &rpcx_core::conn::Response) {}
    fn heartbeat(&self, _p: &rpcx_core::service::Peer) {}
}
