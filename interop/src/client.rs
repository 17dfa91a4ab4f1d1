//! One blocking client facade over every runtime's `Client`, so each Rust-client check
//! (`tests/common/mod.rs`) is written once and run with every client runtime.
//!
//! The smol client's driver runs on a process-wide `smol::Executor`
//! ([`SmolExecutor`], four threads), and callers block in `smol::block_on`, as the tokio
//! clients run on one process-wide tokio runtime.
//!
//! The per-runtime part is deliberately thin: [`RpcClient::send`] is each runtime's own
//! `Client::send(CallSpec)` (what their `RequestBuilder`s end in). [`Client`] and
//! [`Request`] on top are the runtimes' call API (`call`, `request(..).metadata(..)
//! .timeout(..).call_with_metadata(..)`, `call_raw`, `oneway`), written once: they
//! serialize with `rpcx_core::codec` exactly as the runtimes do. Errors keep what the
//! checks look at: the display text, the server's [`RemoteError`] (with the whole
//! response), and whether the call timed out.
//!
//! Every call is bounded: one with a deadline by the deadline itself, one without by
//! [`CALL_BOUND`] (it runs on a helper thread; past the bound the check panics instead
//! of hanging).

use crate::Runtime;
use crate::smol_exec::{SmolExecutor, timeout};
use bytes::Bytes;
use rpcx_core::codec::{self, CodecError};
use rpcx_core::conn::{CallError, CallSpec, RemoteError};
use rpcx_core::wire::{CompressType, Message, Metadata, SerializeType};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bound on a call without a deadline (and on connecting).
pub const CALL_BOUND: Duration = Duration::from_secs(10);

/// Client options the checks vary.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// Serialize type of typed calls (default MsgPack).
    pub serialize_type: SerializeType,
    /// Heartbeat interval (default off).
    pub heartbeat_interval: Option<Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { serialize_type: SerializeType::MSGPACK, heartbeat_interval: None }
    }
}

/// A failed call, the same for every runtime.
#[derive(Debug, Clone)]
pub struct CallErr {
    /// The runtime error's `Display` text.
    pub text: String,
    /// The runtime error's `Debug` text.
    pub debug: String,
    /// The server's error, if it is one (`__rpcx_error__`).
    pub remote: Option<RemoteError>,
    /// Whether the call timed out.
    pub timeout: bool,
}

impl CallErr {
    /// The server's error, if this is one.
    pub fn remote(&self) -> Option<&RemoteError> {
        self.remote.as_ref()
    }

    /// Whether the call timed out.
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }

    fn of(text: String, debug: String, call: Option<&CallError>, timeout: bool) -> Self {
        let remote = match call {
            Some(CallError::Remote(r)) => Some(r.clone()),
            _ => None,
        };
        CallErr { text, debug, remote, timeout }
    }
}

impl std::fmt::Display for CallErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<CodecError> for CallErr {
    fn from(e: CodecError) -> Self {
        CallErr::of(e.to_string(), format!("{e:?}"), None, false)
    }
}

/// Every runtime shares one client error type (`rpcx_core::error::Error`).
impl From<rpcx_core::error::Error> for CallErr {
    fn from(e: rpcx_core::error::Error) -> Self {
        let call = if let rpcx_core::error::Error::Call(c) = &e { Some(c) } else { None };
        CallErr::of(e.to_string(), format!("{e:?}"), call, e.is_timeout())
    }
}

/// A connected client of some runtime. Every method blocks; any number of threads may
/// use one client at once.
pub trait RpcClient: Send + Sync {
    /// The runtime's `Client::send`: the raw response, `None` for a oneway request.
    fn send(&self, spec: CallSpec) -> Result<Option<Message>, CallErr>;
    /// The next server push, waiting at most `wait` (`Duration::ZERO`: only one that
    /// has already been delivered).
    fn next_push(&self, wait: Duration) -> Option<Message>;
    /// Pushes the client dropped because its receiver was full.
    fn dropped_pushes(&self) -> u64;
    /// Whether a close has started (or the connection has ended).
    fn is_closing(&self) -> bool;
    /// Whether the connection has ended.
    fn is_shutdown(&self) -> bool;
}

/// A client of some runtime with the runtimes' call API, blocking. `Clone`: clones share
/// the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<dyn RpcClient>,
    runtime: Runtime,
    opts: ConnectOptions,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("runtime", &self.runtime).field("shutdown", &self.is_shutdown()).finish()
    }
}

impl Client {
    /// Connect a client of `runtime` to `addr` (rpcx form).
    pub fn connect(runtime: Runtime, addr: &str, opts: ConnectOptions) -> Result<Client, CallErr> {
        let a = addr.to_owned();
        let inner = bound(&format!("connect {addr}"), move || runtime.connect(&a, opts))?;
        Ok(Client { inner, runtime, opts })
    }

    /// The runtime of this client.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// Call `service.method` with `args` and decode the reply.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &A,
    ) -> Result<R, CallErr> {
        self.request(service, method).call(args)
    }

    /// Send a oneway request.
    pub fn oneway<A: Serialize + ?Sized>(&self, service: &str, method: &str, args: &A) -> Result<(), CallErr> {
        self.request(service, method).oneway(args)
    }

    /// A call with options.
    pub fn request(&self, service: &str, method: &str) -> Request<'_> {
        Request {
            client: self,
            spec: CallSpec {
                service_path: Bytes::copy_from_slice(service.as_bytes()),
                service_method: Bytes::copy_from_slice(method.as_bytes()),
                metadata: Metadata::new(),
                payload: Bytes::new(),
                serialize_type: self.opts.serialize_type,
                compress: CompressType::NONE,
                oneway: false,
                deadline: None,
            },
            timeout: None,
        }
    }

    /// Send `spec`, bounded (see the module docs).
    pub fn send(&self, spec: CallSpec) -> Result<Option<Message>, CallErr> {
        if spec.deadline.is_some() {
            return self.inner.send(spec);
        }
        let what = format!(
            "{}.{}",
            String::from_utf8_lossy(&spec.service_path),
            String::from_utf8_lossy(&spec.service_method)
        );
        let inner = self.inner.clone();
        bound(&what, move || inner.send(spec))
    }

    /// The next server push, waiting at most `wait` (`Duration::ZERO`: only one that
    /// has already been delivered).
    pub fn next_push(&self, wait: Duration) -> Option<Message> {
        self.inner.next_push(wait)
    }

    /// Pushes dropped because the receiver was full.
    pub fn dropped_pushes(&self) -> u64 {
        self.inner.dropped_pushes()
    }

    /// Whether a close has started (or the connection has ended).
    pub fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    /// Whether the connection has ended.
    pub fn is_shutdown(&self) -> bool {
        self.inner.is_shutdown()
    }
}

/// Run `f` on a helper thread; panic if it takes longer than [`CALL_BOUND`].
fn bound<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("rpcx-interop-call".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a thread");
    rx.recv_timeout(CALL_BOUND).unwrap_or_else(|e| panic!("{what}: no answer within {CALL_BOUND:?} ({e})"))
}

/// A call being configured, like the runtimes' `RequestBuilder`.
#[must_use]
pub struct Request<'a> {
    client: &'a Client,
    spec: CallSpec,
    timeout: Option<Duration>,
}

impl Request<'_> {
    /// Add request metadata.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.spec.metadata.insert(Bytes::copy_from_slice(key.as_bytes()), Bytes::copy_from_slice(value.as_bytes()));
        self
    }

    /// Fail with a timeout after `d` (counted from when the call is issued); the server
    /// is told the deadline in `__ServerTimeout`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Serialize with this type instead of the client's default.
    pub fn serialize_type(mut self, st: SerializeType) -> Self {
        self.spec.serialize_type = st;
        self
    }

    /// Compress payloads over 1024 bytes with this type.
    pub fn compress(mut self, ct: CompressType) -> Self {
        self.spec.compress = ct;
        self
    }

    fn send(mut self, payload: Bytes, oneway: bool) -> Result<Option<Message>, CallErr> {
        self.spec.payload = payload;
        self.spec.oneway = oneway;
        self.spec.deadline = self.timeout.and_then(|d| Instant::now().checked_add(d));
        self.client.send(self.spec)
    }

    /// Call and decode the reply.
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(self, args: &A) -> Result<R, CallErr> {
        Ok(self.call_with_metadata(args)?.0)
    }

    /// Call and return the reply with the response metadata.
    pub fn call_with_metadata<A: Serialize + ?Sized, R: DeserializeOwned>(
        self,
        args: &A,
    ) -> Result<(R, Metadata), CallErr> {
        let payload = codec::to_payload(self.spec.serialize_type, args)?;
        let msg = self.call_raw(payload)?;
        Ok((codec::from_payload(msg.header.serialize_type(), &msg.payload)?, msg.metadata))
    }

    /// Call with an already-serialized payload and return the raw response.
    pub fn call_raw(self, payload: impl Into<Bytes>) -> Result<Message, CallErr> {
        let msg = self.send(payload.into(), false)?;
        msg.ok_or_else(|| CallErr::of("no response to a two-way call".into(), String::new(), None, false))
    }

    /// Send as a oneway request.
    pub fn oneway<A: Serialize + ?Sized>(self, args: &A) -> Result<(), CallErr> {
        let payload = codec::to_payload(self.spec.serialize_type, args)?;
        self.send(payload.into(), true).map(|_| ())
    }
}

impl Runtime {
    /// Connect a client of this runtime to `addr` (rpcx form), taking its push
    /// receiver.
    fn connect(self, addr: &str, opts: ConnectOptions) -> Result<Arc<dyn RpcClient>, CallErr> {
        // A `wss@` server is one of the interop suite's: it has the test certificate.
        let tls = addr.starts_with("wss@").then(|| crate::tls::test_tls().client.clone());
        let name = || crate::tls::SERVER_NAME.to_owned();
        Ok(match self {
            Runtime::Tokio => {
                let o = rpcx_tokio::ClientOptions {
                    serialize_type: opts.serialize_type,
                    connection: rpcx_core::conn::ClientConfig {
                        heartbeat_interval: opts.heartbeat_interval,
                        ..Default::default()
                    },
                    tls: tls.map(|config| rpcx_tokio::tls::TlsClient { config, server_name: name() }),
                    ..Default::default()
                };
                let client = tokio_rt().block_on(rpcx_tokio::Client::connect(addr, o))?;
                let pushes = Mutex::new(client.take_push_receiver());
                Arc::new(TokioClient { client, pushes })
            }
            Runtime::Std => {
                let o = rpcx_std::ClientOptions {
                    serialize_type: opts.serialize_type,
                    connection: rpcx_core::conn::ClientConfig {
                        heartbeat_interval: opts.heartbeat_interval,
                        ..Default::default()
                    },
                    tls: tls.map(|config| rpcx_std::tls::TlsClient { config, server_name: name() }),
                    ..Default::default()
                };
                let client = rpcx_std::Client::connect(addr, o)?;
                let pushes = Mutex::new(client.take_push_receiver());
                Arc::new(StdClient { client, pushes })
            }
            Runtime::Smol => {
                let o = rpcx_smol::ClientOptions {
                    serialize_type: opts.serialize_type,
                    connection: rpcx_core::conn::ClientConfig {
                        heartbeat_interval: opts.heartbeat_interval,
                        ..Default::default()
                    },
                    runtime: smol_client_executor().spawner(),
                    tls: tls.map(|config| rpcx_smol::tls::TlsClient { config, server_name: name() }),
                    ..Default::default()
                };
                let client = smol::block_on(rpcx_smol::Client::connect(addr, o))?;
                let pushes = client.take_push_receiver();
                Arc::new(SmolClient { client, pushes })
            }
        })
    }
}

/// The process-wide runtime the tokio clients run on.
fn tokio_rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .thread_name("interop-tokio-client")
            .enable_all()
            .build()
            .expect("build tokio runtime")
    })
}

struct TokioClient {
    client: rpcx_tokio::Client,
    pushes: Mutex<Option<rpcx_tokio::PushReceiver>>,
}

impl RpcClient for TokioClient {
    fn send(&self, spec: CallSpec) -> Result<Option<Message>, CallErr> {
        Ok(tokio_rt().block_on(self.client.send(spec))?)
    }

    fn next_push(&self, wait: Duration) -> Option<Message> {
        let guard = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        let rx = guard.as_ref()?;
        if wait.is_zero() {
            return rx.try_recv();
        }
        tokio_rt().block_on(async { tokio::time::timeout(wait, rx.recv()).await.ok().flatten() })
    }

    fn dropped_pushes(&self) -> u64 {
        self.client.dropped_pushes()
    }

    fn is_closing(&self) -> bool {
        self.client.is_closing()
    }

    fn is_shutdown(&self) -> bool {
        self.client.is_shutdown()
    }
}

struct StdClient {
    client: rpcx_std::Client,
    pushes: Mutex<Option<rpcx_std::PushReceiver>>,
}

impl RpcClient for StdClient {
    fn send(&self, spec: CallSpec) -> Result<Option<Message>, CallErr> {
        Ok(self.client.send(spec)?)
    }

    fn next_push(&self, wait: Duration) -> Option<Message> {
        let guard = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        let rx = guard.as_ref()?;
        if wait.is_zero() { rx.try_recv() } else { rx.recv_timeout(wait) }
    }

    fn dropped_pushes(&self) -> u64 {
        self.client.dropped_pushes()
    }

    fn is_closing(&self) -> bool {
        self.client.is_closing()
    }

    fn is_shutdown(&self) -> bool {
        self.client.is_shutdown()
    }
}

/// The process-wide executor the smol clients' connection drivers run on.
fn smol_client_executor() -> &'static SmolExecutor {
    static EX: OnceLock<SmolExecutor> = OnceLock::new();
    EX.get_or_init(|| SmolExecutor::new("interop-smol-client", 4))
}

struct SmolClient {
    client: rpcx_smol::Client,
    pushes: Option<rpcx_smol::PushReceiver>,
}

impl RpcClient for SmolClient {
    fn send(&self, spec: CallSpec) -> Result<Option<Message>, CallErr> {
        Ok(smol::block_on(self.client.send(spec))?)
    }

    fn next_push(&self, wait: Duration) -> Option<Message> {
        let rx = self.pushes.as_ref()?;
        if wait.is_zero() {
            return rx.try_recv();
        }
        smol::block_on(timeout(wait, rx.recv())).flatten()
    }

    fn dropped_pushes(&self) -> u64 {
        self.client.dropped_pushes()
    }

    fn is_closing(&self) -> bool {
        self.client.is_closing()
    }

    fn is_shutdown(&self) -> bool {
        self.client.is_shutdown()
    }
}
