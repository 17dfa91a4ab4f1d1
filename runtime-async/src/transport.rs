//! Transports: TCP, unix sockets and TLS over TCP, behind one stream type.

use crate::runtime::{Runtime, timeout};
use crate::{ClientOptions, Error};
use futures_lite::io::{AsyncRead, AsyncWrite};
use rpcx_core::addr::ServerAddr;
use rpcx_core::http::ClientHandshake;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A connected byte stream of any supported transport, on runtime `R`.
///
/// The connection driver owns it whole and polls reads and writes on it in turn, so no
/// transport needs a split (and no lock is taken per read or write).
#[non_exhaustive]
pub enum Stream<R: Runtime> {
    /// Plain TCP.
    Tcp(R::Tcp),
    /// Unix domain socket.
    #[cfg(unix)]
    Unix(R::Unix),
    /// TLS client side.
    ClientTls(Box<futures_rustls::client::TlsStream<R::Tcp>>),
    /// TLS server side.
    ServerTls(Box<futures_rustls::server::TlsStream<R::Tcp>>),
}

impl<R: Runtime> std::fmt::Debug for Stream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Stream::Tcp(_) => "tcp",
            #[cfg(unix)]
            Stream::Unix(_) => "unix",
            Stream::ClientTls(_) => "tls-client",
            Stream::ServerTls(_) => "tls-server",
        };
        f.debug_tuple("Stream").field(&kind).finish()
    }
}

impl<R: Runtime> Stream<R> {
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

impl<R: Runtime> AsyncRead for Stream<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl<R: Runtime> AsyncWrite for Stream<R> {
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
pub(crate) fn tune_tcp(s: socket2::SockRef<'_>, keepalive: Option<Duration>) {
    let _ = s.set_tcp_nodelay(true);
    if let Some(period) = keepalive {
        let ka = socket2::TcpKeepalive::new().with_time(period);
        let _ = s.set_tcp_keepalive(&ka);
    }
}

/// Resolve `host:port`: literal addresses without a lookup, names through the runtime.
pub(crate) async fn resolve<R: Runtime>(rt: &R, addr: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let addrs = rt.resolve(addr).await?;
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing"));
    }
    Ok(addrs)
}

/// Connect to the first address of `addr` that accepts.
async fn connect_tcp<R: Runtime>(rt: &R, addr: &str) -> io::Result<R::Tcp> {
    let mut last = None;
    for a in resolve(rt, addr).await? {
        match rt.connect_tcp(a).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}

/// The HTTP handshake of an `http@` (CONNECT) or `ws@`/`wss@` (WebSocket) address (see
/// `rpcx_core::http::ClientHandshake`). The answer is read a byte at a time so nothing
/// after it is taken from the stream.
async fn http_handshake<R: Runtime>(s: &mut Stream<R>, mut h: ClientHandshake) -> Result<Option<u64>, Error> {
    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(h.request()).await.map_err(Error::Connect)?;
    s.flush().await.map_err(Error::Connect)?;
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await.map_err(Error::Connect)? == 0 {
            let eof =
                io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection in the HTTP handshake");
            return Err(Error::Connect(eof));
        }
        match h.feed(&b) {
            Ok(Some(_)) => return Ok(h.websocket()),
            Ok(None) => {}
            Err(e) => return Err(Error::Connect(io::Error::new(io::ErrorKind::ConnectionRefused, e))),
        }
    }
}

/// Dial `addr` within the connect timeout; with the WebSocket seed the connection's
/// machine must run with (`ws@`, `wss@`).
pub(crate) async fn dial<R: Runtime>(
    addr: &ServerAddr,
    opts: &ClientOptions<R>,
) -> Result<(Stream<R>, Option<u64>), Error> {
    let rt = &opts.runtime;
    let connect = async {
        match addr {
            ServerAddr::Tcp(a) | ServerAddr::Http(a) | ServerAddr::Ws(a) | ServerAddr::Wss(a) => {
                if matches!(addr, ServerAddr::Wss(_)) && opts.tls.is_none() {
                    return Err(Error::Tls(format!("{addr} needs TLS settings (ClientOptions::tls)")));
                }
                let s = connect_tcp(rt, a).await.map_err(Error::Connect)?;
                tune_tcp(R::tcp_socket(&s), opts.tcp_keepalive);
                let mut s = match &opts.tls {
                    None => Stream::Tcp(s),
                    Some(tls) => {
                        let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                            .map_err(|e| Error::Tls(e.to_string()))?;
                        let connector = futures_rustls::TlsConnector::from(tls.config.clone());
                        let s = connector.connect(name, s).await.map_err(|e| Error::Tls(e.to_string()))?;
                        Stream::ClientTls(Box::new(s))
                    }
                };
                let seed = rpcx_core::http::ws::fresh_seed();
                let ws = match ClientHandshake::for_address(addr, &opts.rpc_path, opts.tls.is_some(), seed) {
                    Some(h) => http_handshake(&mut s, h).await?,
                    None => None,
                };
                Ok((s, ws))
            }
            #[cfg(unix)]
            ServerAddr::Unix(p) => {
                rt.connect_unix(std::path::Path::new(p)).await.map(|s| (Stream::Unix(s), None)).map_err(Error::Connect)
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
                rt.unix_from_std(ours).map(|s| (Stream::Unix(s), None)).map_err(Error::Connect)
            }
            #[cfg(not(unix))]
            ServerAddr::Memory(_) => Err(Error::Connect(io::Error::new(
                io::ErrorKind::Unsupported,
                "in-process servers need unix socket pairs",
            ))),
        }
    };
    timeout(rt, opts.connect_timeout, Err(Error::ConnectTimeout), connect).await
}

/// Bytes read per `poll_read`.
const READ_CHUNK: usize = 64 << 10;

thread_local! {
    /// The read buffer of every driver polled on this thread. A driver reads into it
    /// and hands the bytes to its machine (which keeps what it needs) before it next
    /// yields, so no connection owns a read buffer: an idle one costs none.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A [`Stream`] as a driver uses it: reads, writes, flushes and a bounded close.
pub(crate) struct Io<R: Runtime> {
    stream: Stream<R>,
}

impl<R: Runtime> Io<R> {
    pub(crate) fn new(stream: Stream<R>) -> Self {
        Self { stream }
    }

    /// Read into this thread's scratch buffer; on `Ready(Ok(n))` the caller must take
    /// the bytes with [`take_read`] before it yields (no `.await` in between).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            if buf.len() < READ_CHUNK {
                buf.resize(READ_CHUNK, 0);
            }
            Pin::new(&mut self.stream).poll_read(cx, &mut buf[..])
        })
    }

    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }

    pub(crate) async fn close(&mut self) -> io::Result<()> {
        futures_lite::io::AsyncWriteExt::close(&mut self.stream).await
    }

    pub(crate) fn buffers_writes(&self) -> bool {
        self.stream.buffers_writes()
    }
}

/// Give the `n` bytes the last [`Io::poll_read`] on this thread read to `f`.
pub(crate) fn take_read<T>(n: usize, f: impl FnOnce(&[u8]) -> T) -> T {
    SCRATCH.with(|s| f(&s.borrow()[..n]))
}

/// Listen backlog of TCP listeners: as large as the system allows (the kernel caps it
/// at `net.core.somaxconn`, 4096 by default on Linux), so a burst of clients
/// connecting at once is not slowed by dropped SYNs (std's `bind` would give 128).
pub const LISTEN_BACKLOG: i32 = 65535;

/// A std TCP listener bound to `addr` with [`LISTEN_BACKLOG`], non-blocking, for a
/// runtime to adopt (`SO_REUSEADDR` on unix, as Go and tokio set it).
pub fn listen_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod backlog_tests {
    /// Nobody accepts: every connect is held by the kernel in the listener's queue,
    /// which std's `bind` backlog of 128 would not fit.
    #[test]
    fn the_listen_backlog_holds_a_burst_of_300_connects() {
        let l = super::listen_tcp("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut held = Vec::new();
        for i in 0..300 {
            let s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("connect {i} without an accept: {e}"));
            held.push(s);
        }
    }
}
