//! Transports: TCP, unix sockets and TLS over TCP, behind one stream type.

use crate::{ClientOptions, Error};
use rpcx_core::addr::ServerAddr;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected byte stream of any supported transport.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
    /// TLS client side.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// TLS server side.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $m:ident($($arg:expr),*)) => {
        match $self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).$m($($arg),*),
            Stream::Unix(s) => Pin::new(s).$m($($arg),*),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).$m($($arg),*),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).$m($($arg),*),
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
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
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_shutdown(cx))
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

/// Dial `addr` within the connect timeout.
pub(crate) async fn dial(addr: &ServerAddr, opts: &ClientOptions) -> Result<Stream, Error> {
    let connect = async {
        match addr {
            ServerAddr::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await.map_err(Error::Connect)?;
                tune_tcp(&s, opts.tcp_keepalive);
                match &opts.tls {
                    None => Ok(Stream::Tcp(s)),
                    Some(tls) => {
                        let name = rustls::pki_types::ServerName::try_from(tls.server_name.clone())
                            .map_err(|e| Error::Tls(e.to_string()))?;
                        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                        let s = connector.connect(name, s).await.map_err(|e| Error::Tls(e.to_string()))?;
                        Ok(Stream::ClientTls(Box::new(s)))
                    }
                }
            }
            ServerAddr::Unix(p) => UnixStream::connect(p).await.map(Stream::Unix).map_err(Error::Connect),
            ServerAddr::Memory(name) => memu_dial(name).map(Stream::Unix).map_err(Error::Connect),
        }
    };
    tokio::time::timeout(opts.connect_timeout, connect).await.map_err(|_| Error::ConnectTimeout)?
}

/// The read half of a [`Stream`]: TCP splits without a lock, other transports share
/// the stream through tokio's split.
pub(crate) enum ReadHalf {
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Other(tokio::io::ReadHalf<Stream>),
}

/// The write half of a [`Stream`].
pub(crate) enum WriteHalf {
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Other(tokio::io::WriteHalf<Stream>),
}

/// Split a stream into halves that can be polled independently.
pub(crate) fn split(stream: Stream) -> (ReadHalf, WriteHalf) {
    match stream {
        Stream::Tcp(s) => {
            let (r, w) = s.into_split();
            (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
        }
        other => {
            let (r, w) = tokio::io::split(other);
            (ReadHalf::Other(r), WriteHalf::Other(w))
        }
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ReadHalf::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            WriteHalf::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_flush(cx),
            WriteHalf::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            WriteHalf::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Dial an in-process server (`memu@name`): a socket pair, one end handed to it.
fn memu_dial(name: &str) -> io::Result<UnixStream> {
    let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, format!("no in-process server memu@{name}"));
    let acceptor = rpcx_core::memu::route(name).ok_or_else(refused)?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    if !acceptor(theirs) {
        return Err(refused());
    }
    ours.set_nonblocking(true)?;
    UnixStream::from_std(ours)
}
