//! The smol / async-std implementation of [`rpcx_async::Runtime`]: `async-io` for
//! sockets and timers, a [`Spawner`] for tasks.

use crate::Spawner;
use async_io::Async;
use futures_lite::io::{AsyncRead, AsyncWrite};
use rpcx_async::{Runtime, Timer};
use rpcx_core::service::BoxFuture;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// An `async_io::Timer`, re-armable.
#[derive(Debug)]
pub struct SmolTimer(async_io::Timer);

impl Timer for SmolTimer {
    fn reset(&mut self, at: Instant) {
        self.0.set_at(at);
    }
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A TCP or unix stream read by reactor readiness: the read syscall is only tried after
/// the reactor reported the socket readable, and a read that did not fill the buffer is
/// taken to have drained it (the next poll re-registers interest, and the kernel
/// reports data that arrived meanwhile at once). `Async::poll_read` instead tries the
/// syscall on every poll, which costs a failed `recvfrom` each time the driver wakes
/// for anything else.
#[derive(Debug)]
pub struct Ready<T> {
    io: Async<T>,
    readable: bool,
}

impl<T> Ready<T> {
    fn new(io: Async<T>) -> Self {
        Self { io, readable: true }
    }

    /// The socket.
    pub fn get_ref(&self) -> &T {
        self.io.get_ref()
    }
}

impl<T> AsyncRead for Ready<T>
where
    for<'a> &'a T: io::Read,
{
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.readable {
                std::task::ready!(this.io.poll_readable(cx))?;
                this.readable = true;
            }
            match io::Read::read(&mut this.io.get_ref(), buf) {
                Ok(n) => {
                    if n < buf.len() {
                        this.readable = false;
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T> AsyncWrite for Ready<T>
where
    Async<T>: AsyncWrite,
{
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

impl Runtime for Spawner {
    type Tcp = Ready<TcpStream>;
    type TcpListener = Async<std::net::TcpListener>;
    #[cfg(unix)]
    type Unix = Ready<std::os::unix::net::UnixStream>;
    #[cfg(unix)]
    type UnixListener = Async<std::os::unix::net::UnixListener>;
    type Timer = SmolTimer;

    fn spawn(&self, task: BoxFuture<()>) {
        self.spawn_boxed(task);
    }

    fn timer(&self, at: Instant) -> SmolTimer {
        SmolTimer(async_io::Timer::at(at))
    }

    /// A 50 µs `async-io` timer: the task runs again only after the reactor has been
    /// polled, so connections whose sockets became ready meanwhile are not held back
    /// by one that has heavy work pending (the executors poll the reactor only between
    /// batches of tasks).
    fn yield_now(&self) -> rpcx_core::service::BoxFuture<()> {
        Box::pin(async {
            async_io::Timer::after(std::time::Duration::from_micros(50)).await;
        })
    }

    /// Name lookups (which block) run on the `blocking` thread pool.
    fn resolve(&self, host_port: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send {
        let host_port = host_port.to_owned();
        blocking::unblock(move || host_port.to_socket_addrs().map(Iterator::collect))
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<Self::Tcp> {
        Ok(Ready::new(Async::<TcpStream>::connect(addr).await?))
    }

    fn tcp_socket(stream: &Self::Tcp) -> socket2::SockRef<'_> {
        socket2::SockRef::from(stream.get_ref())
    }

    fn bind_tcp(&self, addr: SocketAddr) -> io::Result<Self::TcpListener> {
        Async::new(rpcx_async::listen_tcp(addr)?)
    }

    fn tcp_local_addr(listener: &Self::TcpListener) -> io::Result<SocketAddr> {
        listener.get_ref().local_addr()
    }

    async fn accept_tcp(listener: &Self::TcpListener) -> io::Result<(Self::Tcp, SocketAddr)> {
        let (s, a) = listener.accept().await?;
        Ok((Ready::new(s), a))
    }

    #[cfg(unix)]
    fn connect_unix(&self, path: &std::path::Path) -> impl Future<Output = io::Result<Self::Unix>> + Send {
        let path = path.to_owned();
        async move { Ok(Ready::new(Async::<std::os::unix::net::UnixStream>::connect(path).await?)) }
    }

    #[cfg(unix)]
    fn bind_unix(&self, path: &std::path::Path) -> io::Result<Self::UnixListener> {
        Async::<std::os::unix::net::UnixListener>::bind(path)
    }

    #[cfg(unix)]
    async fn accept_unix(listener: &Self::UnixListener) -> io::Result<(Self::Unix, Option<std::path::PathBuf>)> {
        let (s, a) = listener.accept().await?;
        Ok((Ready::new(s), a.as_pathname().map(ToOwned::to_owned)))
    }

    #[cfg(unix)]
    fn unix_from_std(&self, stream: std::os::unix::net::UnixStream) -> io::Result<Self::Unix> {
        Ok(Ready::new(Async::new(stream)?))
    }
}
