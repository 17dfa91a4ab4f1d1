//! Interop test support for the Go rpcx harness in `interop/go`.
//!
//! * [`services`]: the Rust implementation of the interop service contract
//!   (`interop/go/README.md`): `Arith`, `ProtoArith`, `Echo`, `Push`, `Stats`, with the
//!   same error texts and auth as the Go server. [`router`] builds it.
//! * [`go`]: builds the Go binaries (`go build` once per test process), starts the Go
//!   server as a child process ([`GoServer`]) and runs the Go client scenario driver
//!   ([`go_client`]). Every child is killed on drop and every wait is bounded.
//! * [`RustServer`]: a Rust server on one [`Runtime`] (tokio, std or smol), for the Go
//!   driver and the Rust clients to talk to.
//! * [`otel`]: the Go OpenTelemetry command (rpcx-plugins' plugins, spans recorded in
//!   memory and printed), for `tests/otel_go.rs`.
//! * [`smol_exec`]: the `smol::Executor`s the `rpcx-smol` servers and clients run on.
//! * [`diff`]: the differential test (random request streams to the Go server and to
//!   every Rust server, answers compared by seq).
//! * [`client`]: one blocking facade ([`RpcClient`]) over every runtime's client, so the
//!   Rust-client checks are written once and run with every runtime.
//!
//! The tests never skip: without a `go` toolchain they fail with a message saying so.

pub mod client;
pub mod diff;
pub mod go;
pub mod otel;
pub mod registry;
pub mod services;
pub mod smol_exec;
pub mod tls;

pub use client::{CallErr, Client, ConnectOptions, Request, RpcClient};
pub use go::{ClientRun, GoBinaries, GoServer, go_binaries, go_client};
pub use services::{Args, HeartbeatCounter, ProtoArgs, ProtoReply, Reply, router, router_with_counter};

use rpcx_core::service::Router;
use smol_exec::SmolExecutor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// A Rust rpcx runtime: the suite runs every server and client check on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `rpcx-tokio`.
    Tokio,
    /// `rpcx-std` (blocking sockets and threads).
    Std,
    /// `rpcx-smol` (futures-io + async-io), its tasks on a `smol::Executor`.
    Smol,
}

/// Run `f` on its own thread, failing the test if it takes longer than `limit`. A
/// panic in `f` is re-raised here. (A thread that overruns is left behind; the test
/// fails with `what` in the message.)
pub fn run_bounded<T: Send + 'static>(what: &str, limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("bounded: {what}"))
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a thread");
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = thread.join();
            v
        }
        // The sender is gone without a value: `f` panicked.
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the thread sends its value before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// A socket path that is unique in this process (and across processes via the pid).
pub fn unique_socket_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("rpcx-interop-{}-{n}-{name}.sock", std::process::id()))
}

/// How long closing a server may take before the test gives up on it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A server of one runtime.
enum Handle {
    /// On its own multi-thread tokio runtime.
    Tokio(tokio::runtime::Runtime, rpcx_tokio::ServerHandle),
    Std(rpcx_std::ServerHandle),
    /// On its own `smol::Executor` (four threads).
    Smol(SmolExecutor, rpcx_smol::ServerHandle),
}

impl Handle {
    /// Bind `addr` with `rt`; a `wss@` address gets the process's test certificate.
    fn bind(rt: Runtime, addr: &str, router: Router) -> Self {
        let tls = addr.starts_with("wss@").then(|| tls::test_tls().server.clone());
        match rt {
            Runtime::Tokio => {
                let tokio = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(4)
                    .enable_all()
                    .build()
                    .expect("build tokio runtime");
                let server = rpcx_tokio::Server::new(router);
                let bind = match tls {
                    Some(t) => server.tls(t),
                    None => server,
                }
                .bind(addr);
                let handle = tokio
                    .block_on(async { tokio::time::timeout(Duration::from_secs(10), bind).await })
                    .unwrap_or_else(|_| panic!("binding {addr} timed out"))
                    .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                Handle::Tokio(tokio, handle)
            }
            Runtime::Std => {
                let server = rpcx_std::Server::new(router);
                let server = match tls {
                    Some(t) => server.tls(t),
                    None => server,
                };
                Handle::Std(server.bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")))
            }
            Runtime::Smol => {
                let ex = SmolExecutor::new("interop-smol-server", 4);
                let server = rpcx_smol::Server::new(router).runtime(ex.spawner());
                let bind = match tls {
                    Some(t) => server.tls(t),
                    None => server,
                }
                .bind(addr);
                let handle = smol::block_on(smol_exec::timeout(Duration::from_secs(10), bind))
                    .unwrap_or_else(|| panic!("binding {addr} timed out"))
                    .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
                Handle::Smol(ex, handle)
            }
        }
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Handle::Tokio(_, h) => h.local_addr(),
            Handle::Std(h) => h.local_addr(),
            Handle::Smol(_, h) => h.local_addr(),
        }
    }

    /// Close the listener and every connection now; `true` if that finished within
    /// [`CLOSE_TIMEOUT`].
    fn close(self) -> bool {
        let (tx, rx) = mpsc::channel();
        let closer = move || {
            let closed = match self {
                Handle::Tokio(rt, h) => {
                    let closed = rt.block_on(async { tokio::time::timeout(CLOSE_TIMEOUT, h.close()).await }).is_ok();
                    rt.shutdown_timeout(Duration::from_secs(2));
                    closed
                }
                Handle::Std(h) => {
                    h.close();
                    true
                }
                Handle::Smol(ex, h) => {
                    let closed = smol::block_on(smol_exec::timeout(CLOSE_TIMEOUT, h.close())).is_some();
                    drop(ex);
                    closed
                }
            };
            if closed {
                let _ = tx.send(());
            }
        };
        // The std server's close waits for its connections without a bound: close on a
        // helper thread so a close that hangs fails the test instead of hanging it.
        if std::thread::Builder::new().name("rpcx-interop-close".into()).spawn(closer).is_err() {
            return false;
        }
        rx.recv_timeout(CLOSE_TIMEOUT + Duration::from_secs(3)).is_ok()
    }
}

/// A Rust rpcx server serving [`router`] on one [`Runtime`], closed (and its unix
/// socket removed) on drop.
pub struct RustServer {
    runtime: Runtime,
    handle: Option<Handle>,
    network: &'static str,
    addr: String,
    socket: Option<PathBuf>,
    counter: Option<Arc<HeartbeatCounter>>,
}

impl RustServer {
    /// Serve on `tcp@127.0.0.1:0` with `rt`; `auth` is the required `__AUTH` token, if
    /// any.
    pub fn tcp_on(rt: Runtime, auth: Option<&str>) -> Self {
        let (router, counter) = router_with_counter(auth.map(str::to_owned));
        Self::bind(rt, "tcp@127.0.0.1:0", router, Some(counter), None)
    }

    /// Serve on `wss@127.0.0.1:0` (WebSocket in TLS, the certificate of
    /// [`tls::test_tls`]) with `rt`.
    pub fn wss_on(rt: Runtime, auth: Option<&str>) -> Self {
        let (router, counter) = router_with_counter(auth.map(str::to_owned));
        Self::bind(rt, "wss@127.0.0.1:0", router, Some(counter), None)
    }

    /// Serve on a fresh unix socket with `rt`.
    pub fn unix_on(rt: Runtime, name: &str, auth: Option<&str>) -> Self {
        let path = unique_socket_path(name);
        let (router, counter) = router_with_counter(auth.map(str::to_owned));
        Self::bind(rt, &format!("unix@{}", path.display()), router, Some(counter), Some(path))
    }

    /// Serve any router on `tcp@127.0.0.1:0` with `rt` (a variant of the contract, for
    /// instance with a different auth function).
    pub fn tcp_with_router(rt: Runtime, router: Router) -> Self {
        Self::bind(rt, "tcp@127.0.0.1:0", router, None, None)
    }

    fn bind(
        runtime: Runtime,
        addr: &str,
        router: Router,
        counter: Option<Arc<HeartbeatCounter>>,
        socket: Option<PathBuf>,
    ) -> Self {
        let handle = Handle::bind(runtime, addr, router);
        let (network, addr) = match (&socket, handle.local_addr()) {
            (Some(p), _) => ("unix", p.display().to_string()),
            (None, Some(a)) if addr.starts_with("wss@") => ("wss", a.to_string()),
            (None, Some(a)) => ("tcp", a.to_string()),
            (None, None) => panic!("tcp server without a local address"),
        };
        Self { runtime, handle: Some(handle), network, addr, socket, counter }
    }

    /// The runtime serving.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The address in the Go driver's `-addr` form (`HOST:PORT` or a socket path).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `tcp`, `wss` or `unix`, for the Go driver's `-network`.
    pub fn network(&self) -> &'static str {
        self.network
    }

    /// The address in rpcx form (`tcp@HOST:PORT`, `unix@/path`).
    pub fn rpcx_addr(&self) -> String {
        format!("{}@{}", self.network, self.addr)
    }

    /// Heartbeats this server has counted (0 for a router without the counter).
    pub fn heartbeats(&self) -> u64 {
        self.counter.as_ref().map_or(0, |c| c.count())
    }

    /// Close the server (listener and connections) `delay` from now, from a helper
    /// thread. The returned flag turns true once the close has finished.
    pub fn close_after(&mut self, delay: Duration) -> Arc<AtomicBool> {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let handle = self.handle.take();
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            if handle.is_some_and(Handle::close) {
                flag.store(true, Ordering::SeqCst);
            }
        });
        closed
    }

    /// Run the Go client driver for `scenario` against this server (adds `-addr` and
    /// `-network`), with `extra` flags.
    pub fn go_client(&self, scenario: &str, extra: &[&str]) -> ClientRun {
        let mut args = vec!["-addr", self.addr.as_str(), "-network", self.network];
        let ca;
        if self.network == "wss" {
            ca = tls::test_tls().cert_pem.display().to_string();
            args.extend(["-ca", ca.as_str()]);
        }
        args.extend_from_slice(extra);
        go_client(scenario, &args)
    }
}

impl Drop for RustServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && !h.close()
        {
            // Not a panic in drop (it may run while unwinding): say so instead.
            eprintln!(
                "rpcx-interop: closing the {:?} server at {} took over {CLOSE_TIMEOUT:?}",
                self.runtime, self.addr
            );
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `n` compressible pseudo-random bytes: the Go driver's `pattern` (a 64-byte LCG
/// block repeated with a varying counter byte).
pub fn pattern(n: usize) -> Vec<u8> {
    let mut block = [0u8; 64];
    let mut x: u32 = 12345;
    for b in &mut block {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    (0..n).map(|i| block[i % 64] ^ (i / 640) as u8).collect()
}

/// `n` incompressible pseudo-random bytes: the Go driver's `noise` (xorshift64*).
pub fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}
