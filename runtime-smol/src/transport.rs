//! Transports: TCP, unix sockets and TLS over TCP, behind one stream type.

use crate::{ClientOptions, Error};
use async_io::{Async, Timer};
use futures_lite::io::{AsyncRead, AsyncWrite};
use rpcx_core::addr::ServerAddr;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A connected byte stream of any supported transport.
///
/// The driver owns it whole and polls reads and writes on it in turn, so no transport
/// needs a split (and no lock is taken per read or write).
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// Plain TCP.
    Tcp(Async<TcpStream>),
    /// Unix domain socket.
    #[cfg(unix)]
    Unix(Async<std::os::unix::net::UnixStream>),
    /// TLS client side.
    ClientTls(Box<futures_rustls::client::TlsStream<Async<TcpStream>>>),
    /// TLS server side.
    ServerTls(Box<futures_rustls::server::TlsStream<Async<TcpStream>>>),
}

impl Stream {
    /// Whether a write can leave bytes buffered inside the stream (TLS records), so the
    /// driver must flush once its own buffer is empty.
    pub(crate) fn buffers_writes(&self) -> bool {
        matches!(self, Stream::ClientTls(_) | Stream::ServerTls(_))
    }
}

macro_rules! delegate {
    ($self:ident, $m:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).$m($($arg),*),
            #[cfg(unix)]
            Stream::Unix(s) => Pin::new(s).$m($($arg),*),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).$m($($arg),*),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).$m($($arg),*),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_flush(cx))
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_close(cx))
    }
}

/// TCP_NODELAY and keepalive, as Go's client and server set them.
pub(crate) fn tune_tcp(s: &TcpStream, keepalive: Option<Duration>) {
    let _ = s.set_nodelay(true);
    if let Some(period) = keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(period);
        let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
    }
}

/// Resolve `host:port`; name lookups (which block) run on the `blocking` thread pool.
pub(crate) async fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let addr = addr.to_owned();
    let addrs: Vec<SocketAddr> = blocking::unblock(move || addr.to_socket_addrs().map(Iterator::collect)).await?;
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing"));
    }
    Ok(addrs)
}

/// Connect to the first address of `addr` that accepts.
async fn connect_tcp(addr: &str) -> io::Result<Async<TcpStream>> {
    let mut last = None;
    for a in resolve(addr).await? {
        match Async::<TcpStream>::connect(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// Run `fut`, or give up with `on_timeout` after `d`.
pub(crate) async fn timeout<T>(d: Duration, on_timeout: T, fut: impl Future<Output = T>) -> T {
    futures_lite::future::or(fut, async {
        Timer::after(d).await;
        on_timeout
    })
    .await
}

/// Dial `addr` within the connect timeout.
pub(crate) async fn dial(addr: &ServerAddr, opts: &ClientOptions) -> Result<Stream, Error> {
    let connect = async {
        match addr {
            ServerAddr::Tcp(a) => {
                let s = connect_tcp(a).await.map_err(Error::Connect)?;
                tune_tcp(s.get_ref(), opts.tcp_keepalive);
                match &opts.tls {
                    None => Ok(Stream::Tcp(s)),
                    Some(tls) => {
                        let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                            .map_err(|e| Error::Tls(e.to_string()))?;
                        let connector = futures_rustls::TlsConnector::from(tls.config.clone());
                        let s = connector.connect(name, s).await.map_err(|e| Error::Tls(e.to_string()))?;
                        Ok(Stream::ClientTls(Box::new(s)))
                    }
                }
            }
            #[cfg(unix)]
            ServerAddr::Unix(p) => {
                Async::<std::os::unix::net::UnixStream>::connect(p).await.map(Stream::Unix).map_err(Error::Connect)
            }
            #[cfg(not(unix))]
            ServerAddr::Unix(_) => Err(Error::Connect(io::Error::new(
                io::ErrorKind::Unsupported,
                "unix sockets are not supported on this platform",
            ))),
            #[cfg(unix)]
            ServerAddr::Memory(name) => {
                // In-process: a socket pair, one end handed to the server bound to the name.
                let refused = || {
                    Error::Connect(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("no in-process server memu@{name}"),
                    ))
                };
                let accept = rpcx_core::memu::route(name).ok_or_else(refused)?;
                let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(Error::Connect)?;
                if !accept(theirs) {
                    return Err(refused());
                }
                Async::new(ours).map(Stream::Unix).map_err(Error::Connect)
            }
            #[cfg(not(unix))]
            ServerAddr::Memory(_) => Err(Error::Connect(io::Error::new(
                io::ErrorKind::Unsupported,
                "in-process servers need unix socket pairs",
            ))),
        }
    };
    timeout(opts.connect_timeout, Err(Error::ConnectTimeout), connect).await
}

/// A [`Stream`] as its driver uses it. Plain TCP and unix sockets read through
/// `async-io` readiness: the read syscall is only tried after the reactor reported
/// the socket readable, and a read that did not fill the buffer is taken to have
/// drained it (the next poll re-registers interest, and the kernel reports data that
/// arrived meanwhile at once). `Async::poll_read` instead tries the syscall on every
/// poll, which costs a failed `recvfrom` each time the driver wakes for anything else.
pub(crate) struct Io {
    stream: Stream,
    readable: bool,
}

impl Io {
    pub(crate) fn new(stream: Stream) -> Self {
        Self { stream, readable: true }
    }

    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match &mut self.stream {
            Stream::Tcp(s) => poll_read_ready(s, &mut self.readable, cx, buf),
            #[cfg(unix)]
            Stream::Unix(s) => poll_read_ready(s, &mut self.readable, cx, buf),
            other => Pin::new(other).poll_read(cx, buf),
        }
    }

    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    pub(crate) async fn close(&mut self) -> io::Result<()> {
        futures_lite::io::AsyncWriteExt::close(&mut self.stream).await
    }

    pub(crate) fn buffers_writes(&self) -> bool {
        self.stream.buffers_writes()
    }
}

fn poll_read_ready<T>(
    s: &Async<T>,
    readable: &mut bool,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>>
where
    for<'a> &'a T: io::Read,
{
    loop {
        if !*readable {
            std::task::ready!(s.poll_readable(cx))?;
            *readable = true;
        }
        match io::Read::read(&mut s.get_ref(), buf) {
            Ok(n) => {
                if n < buf.len() {
                    *readable = false;
                }
                return Poll::Ready(Ok(n));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}
