//! Transports: TCP, unix sockets and TLS over TCP, dialled with a timeout, and the
//! socket operations the [engine](crate::engine) uses (blocking reads, non-blocking and
//! sliced blocking writes).

use crate::{ClientOptions, Error};
use rpcx_core::addr::ServerAddr;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A blocked write gives control back this often (`SO_SNDTIMEO`), so call deadlines,
/// write timeouts and shutdown are honoured while the peer is not reading.
const WRITE_SLICE: Duration = Duration::from_millis(50);
/// Slice of the TLS handshake's blocking reads and writes.
const HANDSHAKE_SLICE: Duration = Duration::from_millis(100);

/// A connected socket.
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        };
    }

    /// No read timeout (the reader blocks until data, EOF, or shutdown); blocking writes
    /// give control back every [`WRITE_SLICE`].
    pub(crate) fn set_write_slice(&self) -> io::Result<()> {
        self.set_timeouts(None, Some(WRITE_SLICE))
    }

    /// Read from a shared reference (the reader thread's side).
    pub(crate) fn read_ref(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).read(buf),
            Sock::Unix(s) => (&*s).read(buf),
        }
    }

    /// Write what the socket takes now without waiting (`MSG_DONTWAIT`): the bytes
    /// written, possibly 0 when the send buffer is full.
    pub(crate) fn send_nowait(&self, buf: &[u8]) -> Result<usize, String> {
        let sock = match self {
            Sock::Tcp(s) => socket2::SockRef::from(s),
            Sock::Unix(s) => socket2::SockRef::from(s),
        };
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let mut off = 0;
        while off < buf.len() {
            match sock.send_with_flags(&buf[off..], flags) {
                Ok(0) => return Err("socket write returned zero".into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(off)
    }

    /// One blocking write (returns `WouldBlock`/`TimedOut` after a [`WRITE_SLICE`]
    /// without room).
    pub(crate) fn write_blocking(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => (&*s).write(buf),
            Sock::Unix(s) => (&*s).write(buf),
        }
    }

    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
            Sock::Unix(s) => {
                s.set_read_timeout(read)?;
                s.set_write_timeout(write)
            }
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

/// A dialled connection: the socket and, for TLS, the handshaken session.
pub(crate) type Dialed = (Sock, Option<rustls::Connection>);

/// Dial `addr` within the connect timeout (TCP connect, TLS handshake and HTTP
/// handshake together); with the WebSocket seed the connection's machine must run with
/// (`ws@`, `wss@`).
pub(crate) fn dial(addr: &ServerAddr, opts: &ClientOptions) -> Result<(Dialed, Option<u64>), Error> {
    let deadline = Instant::now() + opts.connect_timeout;
    match addr {
        ServerAddr::Tcp(a) | ServerAddr::Http(a) | ServerAddr::Ws(a) | ServerAddr::Wss(a) => {
            if matches!(addr, ServerAddr::Wss(_)) && opts.tls.is_none() {
                return Err(Error::Tls(format!("{addr} needs TLS settings (ClientOptions::tls)")));
            }
            let s = connect_tcp(a, deadline)?;
            tune_tcp(&s, opts.tcp_keepalive);
            let mut sock = Sock::Tcp(s);
            let mut tls = match &opts.tls {
                None => None,
                Some(cfg) => {
                    let name = rustls::pki_types::ServerName::try_from(cfg.server_name.clone())
                        .map_err(|e| Error::Tls(e.to_string()))?;
                    let conn = rustls::ClientConnection::new(cfg.config.clone(), name)
                        .map_err(|e| Error::Tls(e.to_string()))?;
                    let mut conn = rustls::Connection::Client(conn);
                    handshake(&mut sock, &mut conn, deadline, || true).map_err(|e| match e {
                        HandshakeError::TimedOut => Error::ConnectTimeout,
                        HandshakeError::Failed(e) => Error::Tls(e),
                    })?;
                    Some(conn)
                }
            };
            let seed = rpcx_core::http::ws::fresh_seed();
            let ws = match rpcx_core::http::ClientHandshake::for_address(addr, &opts.rpc_path, tls.is_some(), seed) {
                Some(h) => http_handshake(&mut sock, tls.as_mut(), h, deadline)?,
                None => None,
            };
            Ok(((sock, tls), ws))
        }
        ServerAddr::Unix(p) => {
            let s = UnixStream::connect(p).map_err(Error::Connect)?;
            Ok(((Sock::Unix(s), None), None))
        }
        ServerAddr::Memory(name) => {
            // In-process: a socket pair, one end handed to the server bound to the name.
            let refused = || {
                Error::Connect(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("no in-process server memu@{name}"),
                ))
            };
            let accept = rpcx_core::memu::route(name).ok_or_else(refused)?;
            let (ours, theirs) = UnixStream::pair().map_err(Error::Connect)?;
            if !accept(theirs) {
                return Err(refused());
            }
            Ok(((Sock::Unix(ours), None), None))
        }
    }
}

/// The HTTP handshake of an `http@` (CONNECT) or `ws@`/`wss@` (WebSocket) address (see
/// `rpcx_core::http::ClientHandshake`), through TLS when it is on, within the connect
/// deadline. The answer is read a byte at a time so nothing after it is taken from the
/// stream.
fn http_handshake(
    sock: &mut Sock,
    tls: Option<&mut rustls::Connection>,
    mut h: rpcx_core::http::ClientHandshake,
    deadline: Instant,
) -> Result<Option<u64>, Error> {
    trait Io: Read + Write {}
    impl<T: Read + Write> Io for T {}
    let timed_out = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::ConnectTimeout,
        _ => Error::Connect(e),
    };
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    sock.set_timeouts(Some(left), Some(left)).map_err(Error::Connect)?;
    let mut tls_stream;
    let io: &mut dyn Io = match tls {
        Some(rustls::Connection::Client(conn)) => {
            tls_stream = rustls::Stream::new(conn, sock);
            &mut tls_stream
        }
        Some(rustls::Connection::Server(_)) => return Err(Error::Tls("a server session on a client".into())),
        None => sock,
    };
    io.write_all(h.request()).map_err(timed_out)?;
    io.flush().map_err(timed_out)?;
    let mut b = [0u8; 1];
    loop {
        if io.read(&mut b).map_err(timed_out)? == 0 {
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

/// Try each resolved address with what is left of the connect timeout.
fn connect_tcp(addr: &str, deadline: Instant) -> Result<TcpStream, Error> {
    let mut last = None;
    for a in addr.to_socket_addrs().map_err(Error::Connect)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::ConnectTimeout);
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => last = Some(Error::ConnectTimeout),
            Err(e) => last = Some(Error::Connect(e)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Connect(io::Error::new(io::ErrorKind::NotFound, "no address resolved"))))
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    TimedOut,
    Failed(String),
}

/// Run the TLS handshake on the blocking socket until done, `deadline`, or until
/// `keep_going` says stop (server shutdown).
pub(crate) fn handshake(
    sock: &mut Sock,
    tls: &mut rustls::Connection,
    deadline: Instant,
    keep_going: impl Fn() -> bool,
) -> Result<(), HandshakeError> {
    let io_err = |e: io::Error| HandshakeError::Failed(e.to_string());
    sock.set_timeouts(Some(HANDSHAKE_SLICE), Some(HANDSHAKE_SLICE)).map_err(io_err)?;
    while tls.is_handshaking() {
        match tls.complete_io(sock) {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HandshakeError::Failed(e.to_string())),
        }
        if tls.is_handshaking() && Instant::now() >= deadline {
            return Err(HandshakeError::TimedOut);
        }
        if !keep_going() {
            return Err(HandshakeError::Failed("shutting down".into()));
        }
    }
    Ok(())
}

/// Listen backlog of TCP listeners: as large as the system allows (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default on Linux), so a burst of clients connecting at
/// once is not slowed by dropped SYNs; `TcpListener::bind` would give 128. The same as
/// the async runtimes' `rpcx_async::LISTEN_BACKLOG`.
pub(crate) const LISTEN_BACKLOG: i32 = 65535;

/// A blocking TCP listener on `addr` (`host:port`, resolved; the first address that
/// binds wins) with [`LISTEN_BACKLOG`] and `SO_REUSEADDR`, as Go sets it.
pub(crate) fn listen_tcp(addr: &str) -> io::Result<std::net::TcpListener> {
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address to bind"));
    for a in addr.to_socket_addrs()? {
        let socket = socket2::Socket::new(socket2::Domain::for_address(a), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        match socket.bind(&a.into()).and_then(|()| socket.listen(LISTEN_BACKLOG)) {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nobody accepts: every connect is held by the kernel in the listener's queue,
    /// which `TcpListener::bind`'s backlog of 128 would not fit.
    #[test]
    fn the_listen_backlog_holds_a_burst_of_300_connects() {
        let l = listen_tcp("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut held = Vec::new();
        for i in 0..300 {
            let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .unwrap_or_else(|e| panic!("connect {i} without an accept: {e}"));
            held.push(s);
        }
    }
}
