//! The runtime trait: the only things this crate needs from an async runtime.

use rpcx_core::service::BoxFuture;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncRead, AsyncWrite};

/// What [`Client`](crate::Client), [`Server`](crate::Server) and
/// [`XClient`](crate::XClient) need from an async runtime: spawning detached tasks, one
/// re-armable timer, and TCP / unix sockets as `futures-io` streams. In the spirit of
/// quinn's `Runtime`: every protocol and policy decision lives in `rpcx-core` and in
/// this crate; an implementation only moves bytes and time (`rpcx-tokio` and
/// `rpcx-smol` implement it in about a hundred lines each).
///
/// A value of the runtime travels in [`ClientOptions::runtime`](crate::ClientOptions)
/// and [`ServerOptions::runtime`](crate::ServerOptions); `Default` gives the runtime's
/// usual context (the current tokio runtime, the global smol/async-std executor).
pub trait Runtime: Clone + Default + Send + Sync + fmt::Debug + 'static {
    /// A connected TCP stream.
    type Tcp: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug + 'static;
    /// A bound TCP listener.
    type TcpListener: Send + Sync + 'static;
    /// A connected unix stream.
    #[cfg(unix)]
    type Unix: AsyncRead + AsyncWrite + Unpin + Send + Sync + fmt::Debug + 'static;
    /// A bound unix listener.
    #[cfg(unix)]
    type UnixListener: Send + Sync + 'static;
    /// A timer set to an instant, re-armable.
    type Timer: Timer;

    /// Run `task` in the background, detached. It must be driven to completion (or
    /// until the runtime shuts down) and `spawn` must not block.
    fn spawn(&self, task: BoxFuture<()>);

    /// A timer that fires at `at`.
    fn timer(&self, at: Instant) -> Self::Timer;

    /// Let other tasks (and, where the executor allows, its IO driver) run before the
    /// calling task continues: a connection with heavy work pending yields through it.
    /// The default wakes the task at once and returns `Pending` once.
    fn yield_now(&self) -> BoxFuture<()> {
        Box::pin(YieldOnce(false))
    }

    /// Resolve `host:port` (name lookups may block: run them off the reactor).
    fn resolve(&self, host_port: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;

    /// Connect to `addr`.
    fn connect_tcp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// The socket under a TCP stream (for `TCP_NODELAY` and keepalive).
    fn tcp_socket(stream: &Self::Tcp) -> socket2::SockRef<'_>;

    /// Bind a TCP listener (with the runtime's or the system's listen backlog).
    fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpListener>;

    /// The address a TCP listener is bound to.
    fn tcp_local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr>;

    /// Accept one TCP connection.
    fn accept_tcp(listener: &Self::TcpListener) -> impl Future<Output = io::Result<(Self::Tcp, SocketAddr)>> + Send;

    /// Connect to the unix socket at `path`.
    #[cfg(unix)]
    fn connect_unix(&self, path: &std::path::Path) -> impl Future<Output = io::Result<Self::Unix>> + Send;

    /// Bind a unix listener at `path`.
    #[cfg(unix)]
    fn bind_unix(&self, path: &std::path::Path) -> io::Result<Self::UnixListener>;

    /// Accept one unix connection, with the peer's path if it has one.
    #[cfg(unix)]
    fn accept_unix(
        listener: &Self::UnixListener,
    ) -> impl Future<Output = io::Result<(Self::Unix, Option<std::path::PathBuf>)>> + Send;

    /// Adopt a connected std unix stream (one end of an in-process socket pair).
    #[cfg(unix)]
    fn unix_from_std(&self, stream: std::os::unix::net::UnixStream) -> io::Result<Self::Unix>;
}

/// A timer owned by one task: set to an instant, polled for expiry, re-armed with
/// [`reset`](Self::reset). Firing early never happens; firing once more after a reset
/// to a later instant is tolerated by every user here (the core's `handle_timeout`
/// accepts spurious calls).
pub trait Timer: Send + Unpin + 'static {
    /// Fire at `at` instead.
    fn reset(&mut self, at: Instant);
    /// `Ready` once the instant has passed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// Sleep until `at` on runtime `rt`.
pub(crate) async fn sleep_until<R: Runtime>(rt: &R, at: Instant) {
    let mut t = rt.timer(at);
    futures_lite::future::poll_fn(|cx| t.poll_expired(cx)).await
}

/// Run `fut`, or give up with `on_timeout` after `d`.
pub(crate) async fn timeout<R: Runtime, T>(rt: &R, d: Duration, on_timeout: T, fut: impl Future<Output = T>) -> T {
    let at = Instant::now().checked_add(d);
    futures_lite::future::or(fut, async {
        match at {
            Some(at) => sleep_until(rt, at).await,
            None => std::future::pending().await,
        }
        on_timeout
    })
    .await
}

/// Pending once, waking itself: the default [`Runtime::yield_now`].
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A future polled with a timer: the pair the XClient races attempts against.
pub(crate) struct TimerFuture<T>(pub(crate) T);

impl<T: Timer> Future for TimerFuture<T> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_expired(cx)
    }
}

/// The runtime as the core's [`rpcx_core::service::Timer`] (for hooks that delay a
/// request and handlers that sleep).
pub(crate) struct CoreTimer<R>(pub(crate) R);

impl<R: Runtime> rpcx_core::service::Timer for CoreTimer<R> {
    fn sleep_until(&self, at: Instant) -> BoxFuture<()> {
        let rt = self.0.clone();
        Box::pin(async move { sleep_until(&rt, at).await })
    }
}
