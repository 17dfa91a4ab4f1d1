//! The tokio implementation of [`rpcx_async::Runtime`].

use rpcx_async::{Runtime, Timer};
use rpcx_core::service::BoxFuture;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// The tokio runtime: tasks go to `tokio::spawn` (so clients and servers must be
/// created inside a tokio runtime), timers are `tokio::time::Sleep`, sockets are
/// tokio's, seen through `tokio-util`'s futures-io compatibility layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

/// A tokio `Sleep`, re-armable.
#[derive(Debug)]
pub struct TokioTimer(Pin<Box<tokio::time::Sleep>>);

impl Timer for TokioTimer {
    fn reset(&mut self, at: Instant) {
        self.0.as_mut().reset(at.into());
    }
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Runtime for Tokio {
    type Tcp = Compat<tokio::net::TcpStream>;
    type TcpListener = tokio::net::TcpListener;
    #[cfg(unix)]
    type Unix = Compat<tokio::net::UnixStream>;
    #[cfg(unix)]
    type UnixListener = tokio::net::UnixListener;
    type Timer = TokioTimer;

    fn spawn(&self, task: BoxFuture<()>) {
        tokio::spawn(task);
    }

    fn timer(&self, at: Instant) -> TokioTimer {
        TokioTimer(Box::pin(tokio::time::sleep_until(at.into())))
    }

    /// `tokio::task::yield_now`: the task waits until the worker has polled its IO
    /// driver, so connections whose sockets became ready meanwhile run first.
    fn yield_now(&self) -> BoxFuture<()> {
        Box::pin(tokio::task::yield_now())
    }

    fn resolve(&self, host_port: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let host_port = host_port.to_owned();
        async move { Ok(tokio::net::lookup_host(host_port).await?.collect()) }
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::Tcp> {
        Ok(tokio::net::TcpStream::connect(addr).await?.compat())
    }

    fn tcp_socket(stream: &Self::Tcp) -> socket2::SockRef<'_> {
        socket2::SockRef::from(stream.get_ref())
    }

    fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpListener> {
        tokio::net::TcpListener::from_std(rpcx_async::listen_tcp(addr)?)
    }

    fn tcp_local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept_tcp(listener: &Self::TcpListener) -> io::Result<(Self::Tcp, SocketAddr)> {
        let (s, a) = listener.accept().await?;
        Ok((s.compat(), a))
    }

    #[cfg(unix)]
    fn connect_unix(&self, path: &std::path::Path) -> impl Future<Output = io::Result<Self::Unix>> + Send {
        let path = path.to_owned();
        async move { Ok(tokio::net::UnixStream::connect(path).await?.compat()) }
    }

    #[cfg(unix)]
    fn bind_unix(&self, path: &std::path::Path) -> io::Result<Self::UnixListener> {
        tokio::net::UnixListener::bind(path)
    }

    #[cfg(unix)]
    async fn accept_unix(listener: &Self::UnixListener) -> io::Result<(Self::Unix, Option<std::path::PathBuf>)> {
        let (s, a) = listener.accept().await?;
        Ok((s.compat(), a.as_pathname().map(ToOwned::to_owned)))
    }

    #[cfg(unix)]
    fn unix_from_std(&self, stream: std::os::unix::net::UnixStream) -> io::Result<Self::Unix> {
        stream.set_nonblocking(true)?;
        Ok(tokio::net::UnixStream::from_std(stream)?.compat())
    }
}
