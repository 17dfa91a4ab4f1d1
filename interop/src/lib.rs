//! Interop test support for the Go rpcx harness in `interop/go`.
//!
//! * [`services`]: the Rust implementation of the interop service contract
//!   (`interop/go/README.md`): `Arith`, `ProtoArith`, `Echo`, `Push`, `Stats`, with the
//!   same error texts and auth as the Go server. [`router`] builds it.
//! * [`go`]: builds the Go binaries (`go build` once per test process), starts the Go
//!   server as a child process ([`GoServer`]) and runs the Go client scenario driver
//!   ([`go_client`]). Every child is killed on drop and every wait is bounded.
//! * [`RustServer`]: a Rust server on its own tokio runtime, for the Go driver to talk
//!   to.
//!
//! The tests never skip: without a `go` toolchain they fail with a message saying so.

pub mod go;
pub mod services;

pub use go::{ClientRun, GoBinaries, GoServer, go_binaries, go_client};
pub use services::{Args, HeartbeatCounter, ProtoArgs, ProtoReply, Reply, router, router_with_counter};

use rpcx_tokio::service::Router;
use rpcx_tokio::{Server, ServerHandle};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Run `fut` on a fresh multi-thread tokio runtime, failing the test if it takes longer
/// than `limit`.
pub fn block_on_timeout<F: Future>(limit: Duration, fut: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build tokio runtime");
    let out = rt.block_on(async { tokio::time::timeout(limit, fut).await });
    rt.shutdown_timeout(Duration::from_secs(2));
    match out {
        Ok(v) => v,
        Err(_) => panic!("test body did not finish within {limit:?}"),
    }
}

/// A socket path that is unique in this process (and across processes via the pid).
pub fn unique_socket_path(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("rpcx-interop-{}-{n}-{name}.sock", std::process::id()))
}

/// A Rust rpcx server serving [`router`] on its own multi-thread tokio runtime, shut
/// down (and its unix socket removed) on drop.
pub struct RustServer {
    rt: tokio::runtime::Runtime,
    handle: Option<ServerHandle>,
    network: &'static str,
    addr: String,
    socket: Option<PathBuf>,
    counter: Option<std::sync::Arc<HeartbeatCounter>>,
}

impl RustServer {
    /// Serve on `tcp@127.0.0.1:0`; `auth` is the required `__AUTH` token, if any.
    pub fn tcp(auth: Option<&str>) -> Self {
        let (router, counter) = router_with_counter(auth.map(str::to_owned));
        Self::bind("tcp@127.0.0.1:0", router, Some(counter), None)
    }

    /// Serve on a fresh unix socket.
    pub fn unix(name: &str, auth: Option<&str>) -> Self {
        let path = unique_socket_path(name);
        let (router, counter) = router_with_counter(auth.map(str::to_owned));
        Self::bind(&format!("unix@{}", path.display()), router, Some(counter), Some(path))
    }

    /// Serve any router on `tcp@127.0.0.1:0` (a variant of the contract, for instance
    /// with a different auth function).
    pub fn tcp_with_router(router: Router) -> Self {
        Self::bind("tcp@127.0.0.1:0", router, None, None)
    }

    fn bind(
        addr: &str,
        router: Router,
        counter: Option<std::sync::Arc<HeartbeatCounter>>,
        socket: Option<PathBuf>,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("build tokio runtime");
        let handle = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), Server::new(router).bind(addr)).await })
            .unwrap_or_else(|_| panic!("binding {addr} timed out"))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let (network, addr) = match (&socket, handle.local_addr()) {
            (Some(p), _) => ("unix", p.display().to_string()),
            (None, Some(a)) => ("tcp", a.to_string()),
            (None, None) => panic!("tcp server without a local address"),
        };
        Self { rt, handle: Some(handle), network, addr, socket, counter }
    }

    /// The address in the Go driver's `-addr` form (`HOST:PORT` or a socket path).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `tcp` or `unix`, for the Go driver's `-network`.
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

    /// The runtime the server runs on (to spawn helpers such as a delayed close).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }

    /// Take the handle (the caller then owns shutting it down; drop still stops the
    /// runtime).
    pub fn take_handle(&mut self) -> Option<ServerHandle> {
        self.handle.take()
    }

    /// Run the Go client driver for `scenario` against this server (adds `-addr` and
    /// `-network`), with `extra` flags.
    pub fn go_client(&self, scenario: &str, extra: &[&str]) -> ClientRun {
        let mut args = vec!["-addr", self.addr.as_str(), "-network", self.network];
        args.extend_from_slice(extra);
        go_client(scenario, &args)
    }
}

impl Drop for RustServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), h.close()).await });
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
