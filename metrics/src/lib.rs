//! Metrics for rpcx servers and clients through the [`metrics`] facade: no exporter is
//! forced on you; install whichever recorder you use (Prometheus, StatsD, OpenTelemetry
//! through a bridge, ...) and add the hooks.
//!
//! * [`MetricsHooks`] is both a [`ServerHooks`] and a [`ClientHooks`]: install it with
//!   `Router::hook` and `ClientOptions::hook` (every runtime: tokio, smol, std; XClients
//!   take client hooks the same way). It records the OpenTelemetry RPC semantic-convention
//!   names that Go's rpcx-plugins records ([`names`]), optionally Go's `MetricsPlugin`
//!   (go-metrics) names instead or as well ([`MetricsHooks::go_metrics_names`]).
//! * [`ServerTotalsGauges`] publishes a server's [`ServerTotals`] (what
//!   `ServerHandle::stats()` returns) as gauges `rpcx.server.<field>`, from a periodic
//!   task or right before a scrape.
//!
//! # Names, units and labels
//!
//! | name | kind | unit | labels |
//! | --- | --- | --- | --- |
//! | `rpc.server.duration` | histogram | milliseconds (fractional) | `rpc.system`, `rpc.service`, `rpc.method`, `otel.status_code` |
//! | `rpc.server.request.size` | histogram | bytes | `rpc.system`, `rpc.service`, `rpc.method` |
//! | `rpc.server.response.size` | histogram | bytes | ... `otel.status_code` |
//! | `rpc.server.requests_per_rpc` | counter | requests | `rpc.system`, `rpc.service`, `rpc.method` |
//! | `rpc.server.responses_per_rpc` | counter | responses | ... `otel.status_code` |
//! | `rpc.client.*` | the same five | | the same |
//!
//! The names and units are OpenTelemetry semantic conventions v1.26 (the version
//! rpcx-plugins builds on): durations in `ms`, sizes in `By` (payload bytes, after
//! decompression, without the frame header and metadata). As in rpcx-plugins, the
//! per-RPC counts are plain sums (rpcx-plugins uses `Int64UpDownCounter`s that only go
//! up; semconv v1.26 describes them as histograms whose every value is 1 for unary
//! RPCs, which carries the same information), and the request-side metrics
//! (`requests_per_rpc`, `request.size`) carry no status.
//!
//! Labels: `rpc.system` is always `rpcx`; `rpc.service` and `rpc.method` are the names
//! the client sent (lossy UTF-8); `otel.status_code` is `OK` or `ERROR`, the attribute
//! and values rpcx-plugins puts on its response metrics. On the server `ERROR` means the
//! response carried an error (`__rpcx_error__`: a handler error, an unknown service or
//! method, a hook or auth refusal, a rate limit); on the client it means the call
//! failed in any way (a remote error, a timeout, a lost connection, a refusal). A
//! client counts a response (`responses_per_rpc`, `response.size`) only when one arrived
//! (a success or a remote error, whose payload is usually empty); a oneway call has no response
//! on either side, only a duration (client: until it was written; server: until its
//! handler returned).
//!
//! Prometheus exporters sanitise the dots: `rpc_server_duration_bucket{rpc_system="rpcx",
//! rpc_service="Arith",rpc_method="Mul",otel_status_code="OK",le="5"}`.
//!
//! Distinct `(service, method)` pairs are capped (1000 by default,
//! [`MetricsHooks::max_series`]): past the cap, new names are recorded as service and
//! method `_other`, so a client sending random names cannot grow the metric set without
//! bound.
//!
//! # Go's MetricsPlugin names
//!
//! [`MetricsHooks::go_metrics_names`] records what Go's `serverplugin.MetricsPlugin`
//! registers in its go-metrics registry, with its prefix concatenated as Go does
//! (`prefix + name`, no separator added): counter `serviceCounter` (one per registered
//! service, at the server's start), meter `clientMeter` (connections accepted), meters
//! `service.<sp>.<sm>.Read_Qps` (requests read) and `service.<sp>.<sm>.Write_Qps`
//! (responses written), histogram `service.<sp>.<sm>.CallTime` (nanoseconds, as Go's).
//! A go-metrics meter is a counter here: rates come from the backend (`rate()` in
//! Prometheus). Go has no client metrics plugin, so these hooks record nothing on a
//! client unless the OpenTelemetry names are on as well
//! ([`MetricsHooks::with_go_metrics_names`]).
//!
//! # Handles and recorders
//!
//! Handles are registered once per `(service, method)` on its first request and kept,
//! so a call costs no label building or registry lookup: install the global recorder
//! before the first call (as with any stored `metrics` handle), or give the hooks a
//! recorder of their own with [`MetricsHooks::recorder`].
//!
//! # Example
//!
//! A tokio server and client with the hooks, recording into metrics-exporter-prometheus
//! (see `examples/prometheus.rs` for the HTTP endpoint):
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//! use rpcx_metrics::{MetricsHooks, ServerTotalsGauges};
//! use rpcx_tokio::service::{Context, Router, Service};
//! use rpcx_tokio::{Client, ClientOptions, Server};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let recorder = PrometheusBuilder::new().build_recorder();
//! let scrape = recorder.handle();
//! metrics::set_global_recorder(recorder)?;
//!
//! let hooks = Arc::new(MetricsHooks::new());
//! let router = Router::new()
//!     .service(Service::new("Echo").raw_method("Say", |_c: Context, p: rpcx_tokio::core::bytes::Bytes| async move { Ok(p) }))
//!     .hook(hooks.clone());
//! let server = Server::new(router).bind("tcp@127.0.0.1:0").await?;
//! let client = Client::connect(server.address(), ClientOptions::default().hook(hooks)).await?;
//! client.request("Echo", "Say").call_raw(&b"hello"[..]).await?;
//!
//! ServerTotalsGauges::new().publish(&server.stats());
//! let text = scrape.render();
//! assert!(text.contains(r#"rpc_client_requests_per_rpc{rpc_system="rpcx",rpc_service="Echo",rpc_method="Say"} 1"#));
//! assert!(text.contains("rpcx_server_connections_open 1"));
//! # client.close().await;
//! # server.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(())
//! # }
//! ```

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Recorder, SharedString, Unit};
use rpcx_core::bytes::Bytes;
use rpcx_core::conn::{ClientHooks, FinishedCall, Response};
use rpcx_core::service::{Context, Peer, Rejection, ServerHooks, ServerTotals};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Once, OnceLock, RwLock};
use std::time::{Duration, Instant};

pub mod names;

/// Where handles are registered: the global recorder at the time, or a given one.
#[derive(Clone)]
enum Target {
    Global,
    Own(Arc<dyn Recorder + Send + Sync>),
}

static METADATA: metrics::Metadata<'static> = metrics::Metadata::new("rpcx_metrics", Level::INFO, Some(module_path!()));

impl Target {
    fn with<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match self {
            Target::Global => metrics::with_recorder(f),
            Target::Own(r) => f(r.as_ref()),
        }
    }

    fn counter(&self, key: &Key) -> Counter {
        self.with(|r| r.register_counter(key, &METADATA))
    }

    fn gauge(&self, key: &Key) -> Gauge {
        self.with(|r| r.register_gauge(key, &METADATA))
    }

    fn histogram(&self, key: &Key) -> Histogram {
        self.with(|r| r.register_histogram(key, &METADATA))
    }
}

fn key(name: impl Into<KeyName>, labels: &[Label]) -> Key {
    Key::from_parts(name, labels.to_vec())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The service and method labels of one series, as text.
#[derive(Clone)]
struct Names {
    service: SharedString,
    method: SharedString,
}

impl Names {
    fn of(service: &[u8], method: &[u8]) -> Self {
        Self {
            service: String::from_utf8_lossy(service).into_owned().into(),
            method: String::from_utf8_lossy(method).into_owned().into(),
        }
    }

    fn other() -> Self {
        Self { service: names::OTHER.into(), method: names::OTHER.into() }
    }

    fn labels(&self) -> [Label; 3] {
        [
            Label::from_static_parts(names::RPC_SYSTEM, names::RPCX),
            Label::new(names::RPC_SERVICE, self.service.clone()),
            Label::new(names::RPC_METHOD, self.method.clone()),
        ]
    }
}

/// The handles of one side (server or client) for one `(service, method)`.
struct RpcSeries {
    requests: Counter,
    request_size: Histogram,
    /// Registered on first use, so a method that never fails has no error series (and
    /// one that never succeeds no success series).
    ok: OnceLock<Outcome>,
    error: OnceLock<Outcome>,
    names: Names,
    side: &'static Side,
}

struct Outcome {
    duration: Histogram,
    response_size: Histogram,
    responses: Counter,
}

/// The five names of one side.
struct Side {
    duration: &'static str,
    request_size: &'static str,
    response_size: &'static str,
    requests: &'static str,
    responses: &'static str,
}

static SERVER: Side = Side {
    duration: names::SERVER_DURATION,
    request_size: names::SERVER_REQUEST_SIZE,
    response_size: names::SERVER_RESPONSE_SIZE,
    requests: names::SERVER_REQUESTS_PER_RPC,
    responses: names::SERVER_RESPONSES_PER_RPC,
};

static CLIENT: Side = Side {
    duration: names::CLIENT_DURATION,
    request_size: names::CLIENT_REQUEST_SIZE,
    response_size: names::CLIENT_RESPONSE_SIZE,
    requests: names::CLIENT_REQUESTS_PER_RPC,
    responses: names::CLIENT_RESPONSES_PER_RPC,
};

impl Side {
    fn describe(&self, r: &dyn Recorder, who: &str) {
        r.describe_histogram(
            self.duration.into(),
            Some(Unit::Milliseconds),
            format!("Measures the duration of {who} RPCs").into(),
        );
        r.describe_histogram(
            self.request_size.into(),
            Some(Unit::Bytes),
            "Measures the size of RPC request messages (uncompressed)".into(),
        );
        r.describe_histogram(
            self.response_size.into(),
            Some(Unit::Bytes),
            "Measures the size of RPC response messages (uncompressed)".into(),
        );
        r.describe_counter(self.requests.into(), Some(Unit::Count), "Counts the RPC requests".into());
        r.describe_counter(self.responses.into(), Some(Unit::Count), "Counts the RPC responses".into());
    }
}

impl RpcSeries {
    fn new(target: &Target, side: &'static Side, names: Names) -> Self {
        let labels = names.labels();
        Self {
            requests: target.counter(&key(side.requests, &labels)),
            request_size: target.histogram(&key(side.request_size, &labels)),
            ok: OnceLock::new(),
            error: OnceLock::new(),
            names,
            side,
        }
    }

    fn outcome(&self, target: &Target, ok: bool) -> &Outcome {
        let (slot, status) = if ok { (&self.ok, names::STATUS_OK) } else { (&self.error, names::STATUS_ERROR) };
        slot.get_or_init(|| Outcome::new(target, self.side, &self.names.labels(), status))
    }
}

impl Outcome {
    fn new(target: &Target, side: &Side, labels: &[Label; 3], status: &'static str) -> Self {
        let mut l = labels.to_vec();
        l.push(Label::from_static_parts(names::OTEL_STATUS_CODE, status));
        Self {
            duration: target.histogram(&key(side.duration, &l)),
            response_size: target.histogram(&key(side.response_size, &l)),
            responses: target.counter(&key(side.responses, &l)),
        }
    }
}

/// Go MetricsPlugin handles for one `(service, method)`.
struct GoSeries {
    read_qps: Counter,
    write_qps: Counter,
    call_time: Histogram,
}

/// Go MetricsPlugin handles of the whole server.
struct GoGlobals {
    service_counter: Counter,
    client_meter: Counter,
}

/// A bounded map `service -> method -> handles`, looked up by the names' bytes without
/// copying them.
struct Cache<S> {
    map: RwLock<HashMap<Bytes, HashMap<Bytes, Arc<S>>>>,
    len: std::sync::atomic::AtomicUsize,
    other: OnceLock<Arc<S>>,
}

impl<S> Default for Cache<S> {
    fn default() -> Self {
        Self { map: RwLock::default(), len: Default::default(), other: OnceLock::new() }
    }
}

impl<S> Cache<S> {
    fn get(&self, service: &Bytes, method: &Bytes, max: usize, make: impl Fn(Names) -> S) -> Arc<S> {
        use std::sync::atomic::Ordering::Relaxed;
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(service.as_ref()).and_then(|m| m.get(method.as_ref())) {
                return s.clone();
            }
        }
        if self.len.load(Relaxed) >= max {
            return self.other.get_or_init(|| Arc::new(make(Names::other()))).clone();
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        // Copies: the names may be slices of a whole request frame, not to be kept.
        let methods = map.entry(Bytes::copy_from_slice(service)).or_default();
        if let Some(s) = methods.get(method.as_ref()) {
            return s.clone();
        }
        let s = Arc::new(make(Names::of(service, method)));
        methods.insert(Bytes::copy_from_slice(method), s.clone());
        self.len.fetch_add(1, Relaxed);
        s
    }
}

/// What a server request carries from `post_read_request` to its end.
struct Started {
    at: Instant,
    otel: Option<Arc<RpcSeries>>,
    go: Option<Arc<GoSeries>>,
}

/// Which names to record, and where.
struct Inner {
    target: Target,
    otel: bool,
    go_prefix: Option<String>,
    max_series: usize,
    server: Cache<RpcSeries>,
    client: Cache<RpcSeries>,
    go: Cache<GoSeries>,
    go_globals: OnceLock<GoGlobals>,
    described: Once,
}

/// Server and client hooks that record every call (see the [crate docs](crate) for the
/// names, units and labels). Install one value on both sides, or one per side:
/// `Router::new().hook(hooks.clone())`, `ClientOptions::default().hook(hooks)` with
/// `hooks: Arc<MetricsHooks>`.
///
/// Server: a request's time runs from its `post_read_request` hook (after the frame
/// was decoded and any rewrite, before auth and dispatch) to its `post_write_response`
/// (the response queued for writing), or to its `post_call` for a oneway request.
/// Requests refused before `post_read_request` (by another hook's `pre_read_request`
/// or `rewrite_request`) are timed from the instant they were decoded. A oneway request
/// refused before its handler (by `admit`, by auth, or by a later hook's
/// `post_read_request`) reaches no hook after `post_read_request`: it is counted in
/// `requests_per_rpc` and `request.size` but has no duration (refused by an earlier
/// hook's `post_read_request`, it is not recorded at all). Client: the
/// call's latency as the runtime measured it (`FinishedCall::latency`), the payload
/// sizes sent and received.
#[derive(Clone)]
pub struct MetricsHooks {
    inner: Arc<Inner>,
}

impl fmt::Debug for MetricsHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsHooks")
            .field("otel", &self.inner.otel)
            .field("go_prefix", &self.inner.go_prefix)
            .field("max_series", &self.inner.max_series)
            .finish_non_exhaustive()
    }
}

impl Default for MetricsHooks {
    fn default() -> Self {
        Self::new()
    }
}

/// The default of [`MetricsHooks::max_series`].
pub const DEFAULT_MAX_SERIES: usize = 1000;

impl MetricsHooks {
    fn build(otel: bool, go_prefix: Option<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                target: Target::Global,
                otel,
                go_prefix,
                max_series: DEFAULT_MAX_SERIES,
                server: Cache::default(),
                client: Cache::default(),
                go: Cache::default(),
                go_globals: OnceLock::new(),
                described: Once::new(),
            }),
        }
    }

    fn with_inner(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            target: arc.target.clone(),
            otel: arc.otel,
            go_prefix: arc.go_prefix.clone(),
            max_series: arc.max_series,
            server: Cache::default(),
            client: Cache::default(),
            go: Cache::default(),
            go_globals: OnceLock::new(),
            described: Once::new(),
        });
        f(&mut inner);
        // Handles made so far may belong to another recorder or naming: start afresh.
        inner.server = Cache::default();
        inner.client = Cache::default();
        inner.go = Cache::default();
        inner.go_globals = OnceLock::new();
        inner.described = Once::new();
        Self { inner: Arc::new(inner) }
    }

    /// The OpenTelemetry RPC names (server and client), into the global recorder.
    pub fn new() -> Self {
        Self::build(true, None)
    }

    /// Go `MetricsPlugin`'s go-metrics names only (server side; a client records
    /// nothing), each `prefix + name` as Go's `withPrefix` does (`""` for none).
    pub fn go_metrics_names(prefix: impl Into<String>) -> Self {
        Self::build(false, Some(prefix.into()))
    }

    /// These hooks, also recording Go `MetricsPlugin`'s names with `prefix` on the server.
    pub fn with_go_metrics_names(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with_inner(|i| i.go_prefix = Some(prefix))
    }

    /// Record into `recorder` instead of the global recorder (tests, several exporters,
    /// a recorder installed after the first call).
    pub fn recorder(self, recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        self.with_inner(|i| i.target = Target::Own(recorder))
    }

    /// At most `n` distinct `(service, method)` pairs per side get series of their own;
    /// later ones are recorded as `_other` / `_other` (default [`DEFAULT_MAX_SERIES`]).
    pub fn max_series(self, n: usize) -> Self {
        self.with_inner(|i| i.max_series = n)
    }

    fn describe(&self) {
        let i = &*self.inner;
        i.described.call_once(|| {
            i.target.with(|r| {
                if i.otel {
                    SERVER.describe(r, "server");
                    CLIENT.describe(r, "client");
                }
                if let Some(p) = &i.go_prefix {
                    r.describe_counter(
                        format!("{p}{}", names::GO_SERVICE_COUNTER).into(),
                        Some(Unit::Count),
                        "Services registered (Go MetricsPlugin)".into(),
                    );
                    r.describe_counter(
                        format!("{p}{}", names::GO_CLIENT_METER).into(),
                        Some(Unit::Count),
                        "Connections accepted (Go MetricsPlugin meter)".into(),
                    );
                }
            })
        });
    }

    fn server_series(&self, ctx: &Context) -> Option<Arc<RpcSeries>> {
        let i = &*self.inner;
        if !i.otel {
            return None;
        }
        self.describe();
        let (sp, sm) = (ctx.service_path_bytes(), ctx.service_method_bytes());
        Some(i.server.get(sp, sm, i.max_series, |n| RpcSeries::new(&i.target, &SERVER, n)))
    }

    fn go_series(&self, ctx: &Context) -> Option<Arc<GoSeries>> {
        let i = &*self.inner;
        let prefix = i.go_prefix.as_deref()?;
        // Go skips requests without a service path (heartbeats reach no hook here).
        if ctx.service_path_bytes().is_empty() {
            return None;
        }
        self.describe();
        let (sp, sm) = (ctx.service_path_bytes(), ctx.service_method_bytes());
        Some(i.go.get(sp, sm, i.max_series, |n| {
            let base = format!("{prefix}service.{}.{}", n.service, n.method);
            let t = &i.target;
            let call_time = format!("{base}.{}", names::GO_CALL_TIME);
            t.with(|r| {
                r.describe_histogram(
                    call_time.clone().into(),
                    Some(Unit::Nanoseconds),
                    "Call time (Go MetricsPlugin)".into(),
                )
            });
            GoSeries {
                read_qps: t.counter(&Key::from_name(format!("{base}.{}", names::GO_READ_QPS))),
                write_qps: t.counter(&Key::from_name(format!("{base}.{}", names::GO_WRITE_QPS))),
                call_time: t.histogram(&Key::from_name(call_time)),
            }
        }))
    }

    fn go_globals(&self) -> Option<&GoGlobals> {
        let i = &*self.inner;
        let prefix = i.go_prefix.as_deref()?;
        self.describe();
        Some(i.go_globals.get_or_init(|| GoGlobals {
            service_counter: i.target.counter(&Key::from_name(format!("{prefix}{}", names::GO_SERVICE_COUNTER))),
            client_meter: i.target.counter(&Key::from_name(format!("{prefix}{}", names::GO_CLIENT_METER))),
        }))
    }

    fn started(&self, ctx: &Context) -> Started {
        Started { at: Instant::now(), otel: self.server_series(ctx), go: self.go_series(ctx) }
    }

    /// The request's record (made now if `post_read_request` did not run for it, timed
    /// from when it was decoded).
    fn take_started(&self, ctx: &Context) -> Started {
        ctx.remove_extension::<Started>().unwrap_or_else(|| {
            let s = self.started(ctx);
            self.count_request(ctx, &s);
            Started { at: ctx.received_at(), ..s }
        })
    }

    fn count_request(&self, ctx: &Context, s: &Started) {
        if let Some(o) = &s.otel {
            o.requests.increment(1);
            o.request_size.record(ctx.request_size() as f64);
        }
        if let Some(g) = &s.go {
            g.read_qps.increment(1);
        }
    }

    fn client_series(&self, call: &FinishedCall<'_>) -> Option<Arc<RpcSeries>> {
        let i = &*self.inner;
        if !i.otel {
            return None;
        }
        self.describe();
        Some(
            i.client
                .get(call.service_path, call.service_method, i.max_series, |n| RpcSeries::new(&i.target, &CLIENT, n)),
        )
    }
}

impl ServerHooks for MetricsHooks {
    fn register(&self, _service: &str, _metadata: &str) -> Result<(), String> {
        if let Some(g) = self.go_globals() {
            g.service_counter.increment(1);
        }
        Ok(())
    }

    fn conn_accepted(&self, _peer: &Peer, _now: Instant) -> Result<(), String> {
        if let Some(g) = self.go_globals() {
            g.client_meter.increment(1);
        }
        Ok(())
    }

    fn post_read_request(&self, ctx: &Context) -> Result<(), Rejection> {
        let s = self.started(ctx);
        self.count_request(ctx, &s);
        ctx.insert_extension(s);
        Ok(())
    }

    fn post_call(&self, ctx: &Context, result: &mut Result<Bytes, String>) {
        if !ctx.is_oneway() {
            return;
        }
        // A oneway request has no response: it ends with its handler.
        let s = self.take_started(ctx);
        if let Some(o) = &s.otel {
            o.outcome(&self.inner.target, result.is_ok()).duration.record(millis(s.at.elapsed()));
        }
    }

    fn post_write_response(&self, ctx: &Context, response: &Response) {
        let s = self.take_started(ctx);
        let elapsed = s.at.elapsed();
        if let Some(o) = &s.otel {
            let out = o.outcome(&self.inner.target, response.error.is_none());
            out.duration.record(millis(elapsed));
            out.response_size.record(response.payload.len() as f64);
            out.responses.increment(1);
        }
        if let Some(g) = &s.go {
            g.write_qps.increment(1);
            // Go leaves out call times of 30 minutes or more as impossible.
            if elapsed < Duration::from_secs(30 * 60) {
                g.call_time.record(elapsed.as_nanos() as f64);
            }
        }
    }
}

impl ClientHooks for MetricsHooks {
    fn post_call(&self, call: &mut FinishedCall<'_>) {
        let Some(s) = self.client_series(call) else { return };
        s.requests.increment(1);
        s.request_size.record(call.request_size as f64);
        let (ok, response_size) = match &call.result {
            Ok(Some(msg)) => (true, Some(msg.payload.len())),
            Ok(None) => (true, None),
            // The server answered with an error: a response (usually without payload).
            Err(e) => (false, e.remote().map(|r| r.response.payload.len())),
        };
        let out = s.outcome(&self.inner.target, ok);
        out.duration.record(millis(call.latency));
        if let Some(n) = response_size {
            out.response_size.record(n as f64);
            out.responses.increment(1);
        }
    }
}

/// Publishes a server's [`ServerTotals`] as gauges named `rpcx.server.<field>`
/// ([`names::TOTALS`] lists them; `memory_used` and `memory_peak` are bytes, the rest
/// counts). Call [`publish`](Self::publish) with `server.stats()` from a periodic task,
/// or right before rendering a scrape. Handles are looked up on each call, so the
/// recorder may be installed at any time before.
#[derive(Clone)]
pub struct ServerTotalsGauges {
    target: Target,
    labels: Vec<Label>,
}

impl fmt::Debug for ServerTotalsGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTotalsGauges").field("labels", &self.labels).finish_non_exhaustive()
    }
}

impl Default for ServerTotalsGauges {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerTotalsGauges {
    /// Gauges in the global recorder, without labels.
    pub fn new() -> Self {
        Self { target: Target::Global, labels: Vec::new() }
    }

    /// Gauges in `recorder` instead of the global one.
    pub fn recorder(mut self, recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        self.target = Target::Own(recorder);
        self
    }

    /// Add a label to every gauge (to tell several servers of one process apart:
    /// `.label("server", "public")`).
    pub fn label(mut self, key: impl Into<SharedString>, value: impl Into<SharedString>) -> Self {
        self.labels.push(Label::new(key, value));
        self
    }

    /// Set every gauge to `totals`.
    pub fn publish(&self, totals: &ServerTotals) {
        for (name, value) in names::totals(totals) {
            self.gauge(name).set(value as f64);
        }
    }

    fn gauge(&self, name: &'static str) -> Gauge {
        self.target.gauge(&key(name, &self.labels))
    }

    /// Describe the gauges to the recorder (units and help texts), once at start-up.
    pub fn describe(&self) {
        self.target.with(|r| {
            for &(name, unit, help) in names::TOTALS {
                r.describe_gauge(name.into(), Some(unit), help.into());
            }
        })
    }
}

/// Set the gauges `rpcx.server.<field>` of the global recorder to `totals` (see
/// [`ServerTotalsGauges`]).
pub fn publish_server_totals(totals: &ServerTotals) {
    ServerTotalsGauges::new().publish(totals);
}
