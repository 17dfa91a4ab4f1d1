//! XClient facades: [`XClientRt`] builds an XClient of one runtime over a list of
//! servers, behind the blocking [`XClientCtl`], so the XClient scenarios
//! ([`crate::xscenarios`]) run for every XClient runtime against every server runtime.
//! Every call goes through the runtime's `XClient::request` builder with a raw payload
//! (`call_raw`, `oneway_raw`, `go_raw`), so the builder is what the scenarios exercise.
//!
//! Also here: the `X` service the XClient scenarios call ([`router`]), with a [`Gate`]
//! that holds calls on the server until released.

use crate::runtimes::{Smol, Std, Tokio, tokio_rt};
use crate::services::{Args, Reply};
use bytes::Bytes;
use rpcx_core::codec;
use rpcx_core::conn::CallError;
use rpcx_core::error::Error;
use rpcx_core::govern::{ClientHooks, FailMode, FailOptions, Instance, MultiDiscovery, ServerKey};
use rpcx_core::service::{Context, Router, Service};
use rpcx_core::wire::{CompressType, Message, SerializeType};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The service path the XClient scenarios call.
pub const SERVICE: &str = "X";

/// XClient options the scenarios need. The call timeout is always `None` unless a
/// request sets one.
#[derive(Clone, Default)]
pub struct XOpts {
    pub fail_mode: FailMode,
    pub sticky: bool,
    pub fail: FailOptions,
    pub connect_timeout: Option<Duration>,
    /// Calls in flight per connection (the client machine's limit).
    pub max_in_flight: Option<usize>,
    pub hooks: Vec<Arc<dyn ClientHooks>>,
    /// Select with `ConsistentHash` instead of the default selector.
    pub consistent_hash: bool,
    /// Select the closest server to this position (`geo_selector`).
    pub geo: Option<(f64, f64)>,
    /// Discovery metadata of each server (Go's query form), by position; none: empty.
    pub metadata: Vec<String>,
}

/// One request, as every runtime's builder takes it.
#[derive(Debug, Clone)]
pub struct XReq {
    pub method: String,
    pub payload: Bytes,
    pub serialize_type: SerializeType,
    pub metadata: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub compress: CompressType,
    pub hash_key: Option<Bytes>,
}

impl XReq {
    /// `method` with `args` in MsgPack.
    pub fn args(method: &str, args: &Args) -> Self {
        let payload = codec::to_payload(SerializeType::MSGPACK, args).expect("encode").into();
        Self::raw(method, SerializeType::MSGPACK, payload)
    }

    /// `method` with a payload already serialized as `st`.
    pub fn raw(method: &str, st: SerializeType, payload: Bytes) -> Self {
        XReq {
            method: method.to_owned(),
            payload,
            serialize_type: st,
            metadata: Vec::new(),
            timeout: None,
            compress: CompressType::NONE,
            hash_key: None,
        }
    }

    pub fn metadata(mut self, k: &str, v: &str) -> Self {
        self.metadata.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    pub fn compress(mut self, ct: CompressType) -> Self {
        self.compress = ct;
        self
    }

    pub fn hash_key(mut self, key: &str) -> Self {
        self.hash_key = Some(Bytes::copy_from_slice(key.as_bytes()));
        self
    }
}

/// How an XClient call failed, the same for every runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XFail {
    /// The server's `__rpcx_error__` text.
    Remote(String),
    /// The call's deadline passed.
    Timeout,
    /// The call was cancelled.
    Cancelled,
    /// A dial failed.
    Connect,
    /// A dial timed out.
    ConnectTimeout,
    /// No server to call.
    NoServer,
    /// A `pre_call` hook refused the call, with its text.
    Hook(String),
    /// The connection ended under the call.
    Lost,
    /// The facade's own wait limit passed (`XCallCtl::wait`).
    WaitLimit,
    /// Anything else, with its text.
    Other(String),
}

fn xfail(e: Error) -> XFail {
    match e {
        Error::Call(CallError::Remote(r)) => XFail::Remote(r.text),
        Error::Call(CallError::TimedOut) => XFail::Timeout,
        Error::Call(CallError::Cancelled) => XFail::Cancelled,
        Error::Call(CallError::ConnectionLost(_)) | Error::Shutdown => XFail::Lost,
        Error::Connect(_) => XFail::Connect,
        Error::ConnectTimeout => XFail::ConnectTimeout,
        Error::NoServer => XFail::NoServer,
        Error::Hook(t) => XFail::Hook(t),
        e => XFail::Other(e.to_string()),
    }
}

/// An XClient, whatever the runtime.
pub trait XClientCtl: Send + Sync {
    /// `request(method)...call_raw(payload)`.
    fn call(&self, req: XReq) -> Result<Message, XFail>;
    /// `request(method)...oneway_raw(payload)`.
    fn oneway(&self, req: XReq) -> Result<(), XFail>;
    /// `request(method)...go_raw(payload)`.
    fn go(&self, req: XReq) -> Result<Box<dyn XCallCtl>, XFail>;
    /// `send_raw(message)`.
    fn send_raw(&self, msg: Message) -> Result<Option<Message>, XFail>;
    /// Replace the discovery's server list.
    fn update(&self, servers: &[String]);
    /// Servers with a cached connection.
    fn connected(&self) -> Vec<String>;
    fn close(&self);
}

/// An `XCall` of any runtime. Dropping it drops the `XCall` (which cancels the call).
pub trait XCallCtl: Send {
    /// Wait at most `limit` ([`XFail::WaitLimit`] after it).
    fn wait(self: Box<Self>, limit: Duration) -> Result<Message, XFail>;
    /// `XCall::detach`.
    fn detach(self: Box<Self>);
}

/// Builds XClients of one runtime.
pub trait XClientRt: Send + Sync {
    fn name(&self) -> &'static str;
    /// An XClient for [`SERVICE`] over `servers` (`network@addr`).
    fn xclient(&self, servers: &[String], opts: XOpts) -> Arc<dyn XClientCtl>;
    /// A bidirectional XClient and its push receiver: `next(limit)` waits at most
    /// `limit` for the next push or connection end.
    #[allow(clippy::type_complexity)]
    fn bidirectional(
        &self,
        servers: &[String],
        opts: XOpts,
    ) -> (Arc<dyn XClientCtl>, Box<dyn Fn(Duration) -> Option<rpcx_core::govern::XPush> + Send>);
}

fn discovery(servers: &[String], metadata: &[String]) -> Arc<MultiDiscovery> {
    Arc::new(MultiDiscovery::new(
        servers.iter().enumerate().map(|(i, s)| Instance::new(s.as_str(), metadata.get(i).map_or("", |m| m.as_str()))),
    ))
}

fn keys(v: Vec<ServerKey>) -> Vec<String> {
    v.into_iter().map(|k| k.as_str().to_owned()).collect()
}

/// The runtime's `XClientOptions` from [`XOpts`] (the same field names everywhere).
macro_rules! xoptions {
    ($ty:ty, $o:expr) => {{
        let o: XOpts = $o;
        let mut x = <$ty>::default();
        x.fail_mode = o.fail_mode;
        x.sticky = o.sticky;
        x.fail = o.fail;
        x.hooks = o.hooks;
        if o.consistent_hash {
            x.selector = Box::new(rpcx_core::govern::ConsistentHash::default());
        }
        if let Some((lat, lon)) = o.geo {
            x = x.geo_selector(lat, lon);
        }
        x.client.call_timeout = None;
        if let Some(t) = o.connect_timeout {
            x.client.connect_timeout = t;
        }
        if let Some(n) = o.max_in_flight {
            x.client.connection.max_in_flight = n;
        }
        x
    }};
}

/// The runtime's request builder for `req`, and its payload.
macro_rules! build {
    ($xc:expr, $req:expr) => {{
        let req: XReq = $req;
        let mut b = $xc.request(&req.method).serialize_type(req.serialize_type).compress(req.compress);
        for (k, v) in &req.metadata {
            b = b.metadata(k, v);
        }
        if let Some(t) = req.timeout {
            b = b.timeout(t);
        }
        if let Some(k) = req.hash_key {
            b = b.hash_key(k);
        }
        (b, req.payload)
    }};
}

// ---------------------------------------------------------------- tokio

struct TokioX(rpcx_tokio::XClient, Arc<MultiDiscovery>);
struct TokioXCall(rpcx_tokio::XCall<Message>);

impl XClientCtl for TokioX {
    fn call(&self, req: XReq) -> Result<Message, XFail> {
        let (b, payload) = build!(self.0, req);
        tokio_rt().block_on(b.call_raw(payload)).map_err(xfail)
    }
    fn oneway(&self, req: XReq) -> Result<(), XFail> {
        let (b, payload) = build!(self.0, req);
        tokio_rt().block_on(b.oneway_raw(payload)).map_err(xfail)
    }
    fn send_raw(&self, msg: Message) -> Result<Option<Message>, XFail> {
        tokio_rt().block_on(self.0.send_raw(msg)).map_err(xfail)
    }
    fn go(&self, req: XReq) -> Result<Box<dyn XCallCtl>, XFail> {
        let _in = tokio_rt().enter();
        let (b, payload) = build!(self.0, req);
        Ok(Box::new(TokioXCall(b.go_raw(payload).map_err(xfail)?)))
    }
    fn update(&self, servers: &[String]) {
        self.1.update(servers.iter().map(|s| Instance::new(s.as_str(), "")));
    }
    fn connected(&self) -> Vec<String> {
        keys(self.0.connected())
    }
    fn close(&self) {
        tokio_rt().block_on(self.0.close());
    }
}

impl XCallCtl for TokioXCall {
    fn wait(self: Box<Self>, limit: Duration) -> Result<Message, XFail> {
        match tokio_rt().block_on(async { tokio::time::timeout(limit, self.0).await }) {
            Ok(r) => r.map_err(xfail),
            Err(_) => Err(XFail::WaitLimit),
        }
    }
    fn detach(self: Box<Self>) {
        self.0.detach();
    }
}

impl XClientRt for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }
    fn xclient(&self, servers: &[String], opts: XOpts) -> Arc<dyn XClientCtl> {
        let d = discovery(servers, &opts.metadata);
        let xc = rpcx_tokio::XClient::new(SERVICE, d.clone(), xoptions!(rpcx_tokio::XClientOptions, opts));
        Arc::new(TokioX(xc, d))
    }
    fn bidirectional(
        &self,
        servers: &[String],
        opts: XOpts,
    ) -> (Arc<dyn XClientCtl>, Box<dyn Fn(Duration) -> Option<rpcx_core::govern::XPush> + Send>) {
        let d = discovery(servers, &opts.metadata);
        let (xc, rx) =
            rpcx_tokio::XClient::bidirectional(SERVICE, d.clone(), xoptions!(rpcx_tokio::XClientOptions, opts));
        let next =
            move |limit| tokio_rt().block_on(async { tokio::time::timeout(limit, rx.recv()).await.ok().flatten() });
        (Arc::new(TokioX(xc, d)), Box::new(next))
    }
}

// ---------------------------------------------------------------- smol

struct SmolX(rpcx_smol::XClient, Arc<MultiDiscovery>);
struct SmolXCall(rpcx_smol::XCall<Message>);

impl XClientCtl for SmolX {
    fn call(&self, req: XReq) -> Result<Message, XFail> {
        let (b, payload) = build!(self.0, req);
        smol::block_on(b.call_raw(payload)).map_err(xfail)
    }
    fn oneway(&self, req: XReq) -> Result<(), XFail> {
        let (b, payload) = build!(self.0, req);
        smol::block_on(b.oneway_raw(payload)).map_err(xfail)
    }
    fn send_raw(&self, msg: Message) -> Result<Option<Message>, XFail> {
        smol::block_on(self.0.send_raw(msg)).map_err(xfail)
    }
    fn go(&self, req: XReq) -> Result<Box<dyn XCallCtl>, XFail> {
        let (b, payload) = build!(self.0, req);
        Ok(Box::new(SmolXCall(b.go_raw(payload).map_err(xfail)?)))
    }
    fn update(&self, servers: &[String]) {
        self.1.update(servers.iter().map(|s| Instance::new(s.as_str(), "")));
    }
    fn connected(&self) -> Vec<String> {
        keys(self.0.connected())
    }
    fn close(&self) {
        smol::block_on(self.0.close());
    }
}

impl XCallCtl for SmolXCall {
    fn wait(self: Box<Self>, limit: Duration) -> Result<Message, XFail> {
        let call = self.0;
        let r = smol::block_on(futures_lite::future::or(async { Some(call.await) }, async {
            async_io::Timer::after(limit).await;
            None
        }));
        r.ok_or(XFail::WaitLimit)?.map_err(xfail)
    }
    fn detach(self: Box<Self>) {
        self.0.detach();
    }
}

impl XClientRt for Smol {
    fn name(&self) -> &'static str {
        "smol"
    }
    fn xclient(&self, servers: &[String], opts: XOpts) -> Arc<dyn XClientCtl> {
        let d = discovery(servers, &opts.metadata);
        let xc = rpcx_smol::XClient::new(SERVICE, d.clone(), xoptions!(rpcx_smol::XClientOptions, opts));
        Arc::new(SmolX(xc, d))
    }
    fn bidirectional(
        &self,
        servers: &[String],
        opts: XOpts,
    ) -> (Arc<dyn XClientCtl>, Box<dyn Fn(Duration) -> Option<rpcx_core::govern::XPush> + Send>) {
        let d = discovery(servers, &opts.metadata);
        let (xc, rx) =
            rpcx_smol::XClient::bidirectional(SERVICE, d.clone(), xoptions!(rpcx_smol::XClientOptions, opts));
        let next = move |limit| {
            smol::block_on(futures_lite::future::or(async { rx.recv().await }, async {
                async_io::Timer::after(limit).await;
                None
            }))
        };
        (Arc::new(SmolX(xc, d)), Box::new(next))
    }
}

// ---------------------------------------------------------------- std

struct StdX(rpcx_std::XClient, Arc<MultiDiscovery>);
struct StdXCall(rpcx_std::XCall<Message>);

impl XClientCtl for StdX {
    fn call(&self, req: XReq) -> Result<Message, XFail> {
        let (b, payload) = build!(self.0, req);
        b.call_raw(payload).map_err(xfail)
    }
    fn oneway(&self, req: XReq) -> Result<(), XFail> {
        let (b, payload) = build!(self.0, req);
        b.oneway_raw(payload).map_err(xfail)
    }
    fn send_raw(&self, msg: Message) -> Result<Option<Message>, XFail> {
        self.0.send_raw(msg).map_err(xfail)
    }
    fn go(&self, req: XReq) -> Result<Box<dyn XCallCtl>, XFail> {
        let (b, payload) = build!(self.0, req);
        Ok(Box::new(StdXCall(b.go_raw(payload).map_err(xfail)?)))
    }
    fn update(&self, servers: &[String]) {
        self.1.update(servers.iter().map(|s| Instance::new(s.as_str(), "")));
    }
    fn connected(&self) -> Vec<String> {
        keys(self.0.connected())
    }
    fn close(&self) {
        self.0.close();
    }
}

impl XCallCtl for StdXCall {
    fn wait(self: Box<Self>, limit: Duration) -> Result<Message, XFail> {
        let t0 = Instant::now();
        // `wait_timeout` gives up with a timeout at the limit; tell it from the call's own.
        match self.0.wait_timeout(limit) {
            Err(Error::Call(CallError::TimedOut)) if t0.elapsed() >= limit => Err(XFail::WaitLimit),
            r => r.map_err(xfail),
        }
    }
    fn detach(self: Box<Self>) {
        self.0.detach();
    }
}

impl XClientRt for Std {
    fn name(&self) -> &'static str {
        "std"
    }
    fn xclient(&self, servers: &[String], opts: XOpts) -> Arc<dyn XClientCtl> {
        let d = discovery(servers, &opts.metadata);
        let xc = rpcx_std::XClient::new(SERVICE, d.clone(), xoptions!(rpcx_std::XClientOptions, opts));
        Arc::new(StdX(xc, d))
    }
    fn bidirectional(
        &self,
        servers: &[String],
        opts: XOpts,
    ) -> (Arc<dyn XClientCtl>, Box<dyn Fn(Duration) -> Option<rpcx_core::govern::XPush> + Send>) {
        let d = discovery(servers, &opts.metadata);
        let (xc, rx) = rpcx_std::XClient::bidirectional(SERVICE, d.clone(), xoptions!(rpcx_std::XClientOptions, opts));
        let rx = Mutex::new(rx);
        let next = move |limit| rx.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(limit);
        (Arc::new(StdX(xc, d)), Box::new(next))
    }
}

// ---------------------------------------------------------------- the X service

/// Holds `X.Hold` calls on the server until [`release`](Self::release)d, and counts
/// them. Runtime-neutral: a held handler is a future woken by `release`.
#[derive(Default)]
pub struct Gate {
    /// `X.Hold` handlers that began.
    pub started: AtomicUsize,
    /// `X.Hold` handlers that returned.
    pub finished: AtomicUsize,
    /// `X.Note` requests seen.
    pub notes: AtomicUsize,
    armed: AtomicBool,
    open: Mutex<(bool, Vec<Waker>)>,
}

impl Gate {
    /// The next `X.Hold` call (only that one) waits for [`release`](Self::release);
    /// later ones return at once.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Let every held call return (and every later one).
    pub fn release(&self) {
        let wakers = {
            let mut st = self.open.lock().unwrap_or_else(|p| p.into_inner());
            st.0 = true;
            std::mem::take(&mut st.1)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    fn wait(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        struct Wait(Arc<Gate>);
        impl Future for Wait {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
                let mut st = self.0.open.lock().unwrap_or_else(|p| p.into_inner());
                if st.0 {
                    return Poll::Ready(());
                }
                if !st.1.iter().any(|w| w.will_wake(cx.waker())) {
                    st.1.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
        Wait(self)
    }
}

/// Service `X` of server `id`: `Who` answers `id` (with response metadata `server`);
/// `Fail` fails with `fail on {id}`; `Hold` waits on the gate when it is armed;
/// `Raw` echoes its payload; `Meta` echoes request metadata (not `__` keys) as
/// response metadata; `Deadline` answers the milliseconds left of its deadline (-1
/// without); `Note` counts (for oneway).
pub fn router(id: i64, gate: Arc<Gate>) -> Router {
    let (g1, g2) = (gate.clone(), gate);
    let x = Service::new(SERVICE)
        .method("Who", move |c: Context, _a: Args| async move {
            c.set_response_metadata("server", id.to_string());
            Ok(Reply { c: id })
        })
        .method("Fail", move |_c: Context, _a: Args| async move { Err::<Reply, _>(format!("fail on {id}").into()) })
        .method("Hold", move |_c: Context, _a: Args| {
            let g = g1.clone();
            async move {
                g.started.fetch_add(1, Ordering::SeqCst);
                if g.armed.swap(false, Ordering::SeqCst) {
                    g.clone().wait().await;
                }
                g.finished.fetch_add(1, Ordering::SeqCst);
                Ok(Reply { c: id })
            }
        })
        .raw_method("Raw", |_c: Context, p: Bytes| async move { Ok(p) })
        .method("Push", move |c: Context, a: Args| async move {
            for i in 0..a.a {
                c.pusher().push(SERVICE, "Note", Default::default(), format!("{id}:{i}")).map_err(|e| e.to_string())?;
            }
            Ok(Reply { c: id })
        })
        .method("Meta", |c: Context, a: Args| async move {
            for (k, v) in c.metadata().iter() {
                if !k.starts_with(b"__") {
                    c.set_response_metadata(k.clone(), v.clone());
                }
            }
            Ok(Reply { c: a.a + a.b })
        })
        .method("Deadline", |c: Context, _a: Args| async move {
            let ms = c.deadline().map(|d| d.saturating_duration_since(Instant::now()).as_millis() as i64).unwrap_or(-1);
            Ok(Reply { c: ms })
        })
        .method("Note", move |_c: Context, _a: Args| {
            g2.notes.fetch_add(1, Ordering::SeqCst);
            async move { Ok(Reply { c: 0 }) }
        });
    Router::new().service(x)
}
