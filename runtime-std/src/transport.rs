//! Transports (TCP, unix sockets, TLS over TCP) and the two halves every connection
//! uses: a reader thread that moves raw bytes to the driver, and a [`Link`] the driver
//! owns to decrypt input and write output.

use crate::{ClientOptions, Error};
use rpcx_core::addr::ServerAddr;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Size of one read buffer.
const READ_BUF_LEN: usize = 64 << 10;
/// Read buffers per connection: the reader can fill one while the driver works on the
/// other; with both in use it stops reading, so TCP pushes back on the peer.
const READ_BUFFERS: usize = 2;
/// A blocked write gives the driver control back this often (`SO_SNDTIMEO`), so call
/// deadlines, write timeouts and shutdown are honoured while the peer is not reading.
pub(crate) const WRITE_SLICE: Duration = Duration::from_millis(50);
/// Slice of the TLS handshake's blocking reads and writes.
const HANDSHAKE_SLICE: Duration = Duration::from_millis(100);
/// Stack of reader threads: they only read and hand buffers over.
const READER_STACK: usize = 128 << 10;

/// A connected socket.
#[derive(Debug)]
pub(crate) enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    pub(crate) fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    pub(crate) fn shutdown(&self, how: Shutdown) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
        };
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

/// Dial `addr` within the connect timeout (TCP connect and TLS handshake together).
pub(crate) fn dial(addr: &ServerAddr, opts: &ClientOptions) -> Result<Link, Error> {
    let deadline = Instant::now() + opts.connect_timeout;
    match addr {
        ServerAddr::Tcp(a) => {
            let s = connect_tcp(a, deadline)?;
            tune_tcp(&s, opts.tcp_keepalive);
            let mut sock = Sock::Tcp(s);
            let tls = match &opts.tls {
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
            Link::new(sock, tls).map_err(Error::Connect)
        }
        ServerAddr::Unix(p) => {
            let s = UnixStream::connect(p).map_err(Error::Connect)?;
            Link::new(Sock::Unix(s), None).map_err(Error::Connect)
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
            Link::new(Sock::Unix(ours), None).map_err(Error::Connect)
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

/// What the reader thread hands the driver.
#[derive(Debug)]
pub(crate) enum Input {
    /// `buf[..n]` was read; give `buf` back through the credit channel.
    Data(Vec<u8>, usize),
    /// The peer closed its side.
    Eof,
    /// The read failed.
    Failed(String),
}

/// The driver's side of a connection: the socket it writes to, the optional TLS state,
/// and the channel that gives read buffers back to the reader thread.
pub(crate) struct Link {
    sock: Sock,
    tls: Option<rustls::Connection>,
    plain: Vec<u8>,
    credits: Option<mpsc::Sender<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Link {
    /// Wrap a connected (and, for TLS, handshaken) socket; sets the write slice.
    pub(crate) fn new(sock: Sock, tls: Option<rustls::Connection>) -> io::Result<Link> {
        sock.set_timeouts(None, Some(WRITE_SLICE))?;
        Ok(Link { sock, tls, plain: Vec::new(), credits: None, reader: None })
    }

    /// Start the reader thread. `deliver` puts an [`Input`] on the driver's channel and
    /// returns false once the driver is gone. The reader owns at most
    /// [`READ_BUFFERS`] buffers; it gets them back through [`Link::recycle`].
    pub(crate) fn spawn_reader<F>(&mut self, name: &str, deliver: F) -> io::Result<()>
    where
        F: Fn(Input) -> bool + Send + 'static,
    {
        let mut sock = self.sock.try_clone()?;
        let (credit_tx, credit_rx) = mpsc::channel::<Vec<u8>>();
        let reader = thread::Builder::new().name(name.into()).stack_size(READER_STACK).spawn(move || {
            let mut created = 0;
            loop {
                let mut buf = match credit_rx.try_recv() {
                    Ok(b) => b,
                    Err(mpsc::TryRecvError::Empty) if created < READ_BUFFERS => {
                        created += 1;
                        vec![0; READ_BUF_LEN]
                    }
                    Err(mpsc::TryRecvError::Empty) => match credit_rx.recv() {
                        Ok(b) => b,
                        Err(_) => return,
                    },
                    Err(mpsc::TryRecvError::Disconnected) => return,
                };
                let input = loop {
                    match sock.read(&mut buf) {
                        Ok(0) => break Input::Eof,
                        Ok(n) => break Input::Data(buf, n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Input::Failed(e.to_string()),
                    }
                };
                let last = !matches!(input, Input::Data(..));
                if !deliver(input) || last {
                    return;
                }
            }
        })?;
        self.credits = Some(credit_tx);
        self.reader = Some(reader);
        Ok(())
    }

    /// Give a read buffer back to the reader thread.
    pub(crate) fn recycle(&self, buf: Vec<u8>) {
        if let Some(c) = &self.credits {
            let _ = c.send(buf);
        }
    }

    /// Plaintext of raw bytes from the reader: the bytes themselves, or what TLS
    /// decrypts from them (possibly nothing yet). An empty `raw` processes what the TLS
    /// state already holds (bytes read along with the handshake). `Err` is a TLS
    /// failure: abort the connection.
    pub(crate) fn decode<'a>(&'a mut self, raw: &'a [u8]) -> Result<&'a [u8], String> {
        let Some(tls) = &mut self.tls else { return Ok(raw) };
        self.plain.clear();
        let mut rd = raw;
        loop {
            if !rd.is_empty() {
                match tls.read_tls(&mut rd) {
                    Ok(0) => rd = &[], // close_notify: nothing more is read; the TCP EOF follows
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Other => {} // plaintext buffer full: drain below
                    Err(e) => return Err(e.to_string()),
                }
            }
            if let Err(e) = tls.process_new_packets() {
                let _ = tls.write_tls(&mut self.sock); // the alert, best effort
                return Err(e.to_string());
            }
            let mut chunk = [0u8; 16 << 10];
            loop {
                match tls.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => self.plain.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if rd.is_empty() {
                break;
            }
        }
        // Post-handshake messages may ask for an answer (key update).
        while tls.wants_write() {
            if let Err(e) = tls.write_tls(&mut self.sock) {
                if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) {
                    return Err(e.to_string());
                }
            }
        }
        Ok(&self.plain)
    }

    /// Write all of `buf` (encrypting it under TLS). Whenever the socket takes nothing
    /// for a [`WRITE_SLICE`], `stalled(now, time since the last progress)` runs; an
    /// `Err` from it abandons the write.
    pub(crate) fn write_all(
        &mut self,
        buf: &[u8],
        mut stalled: impl FnMut(Instant, Duration) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut progress_at = Instant::now();
        let mut on_err = |e: io::Error, progress_at: Instant| -> Result<(), String> {
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    let now = Instant::now();
                    stalled(now, now.saturating_duration_since(progress_at))
                }
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e.to_string()),
            }
        };
        match &mut self.tls {
            None => {
                let mut off = 0;
                while off < buf.len() {
                    match self.sock.write(&buf[off..]) {
                        Ok(0) => return Err("socket write returned zero".into()),
                        Ok(n) => {
                            off += n;
                            progress_at = Instant::now();
                        }
                        Err(e) => on_err(e, progress_at)?,
                    }
                }
            }
            Some(tls) => {
                let mut off = 0;
                while off < buf.len() || tls.wants_write() {
                    if off < buf.len() {
                        off += tls.writer().write(&buf[off..]).map_err(|e| e.to_string())?;
                    }
                    while tls.wants_write() {
                        match tls.write_tls(&mut self.sock) {
                            Ok(0) => return Err("socket write returned zero".into()),
                            Ok(_) => progress_at = Instant::now(),
                            Err(e) => on_err(e, progress_at)?,
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// End the connection: a TLS close_notify when `clean`, then shut the socket
    /// (which also wakes the reader thread) and wait for the reader to finish.
    pub(crate) fn close(&mut self, clean: bool) {
        if let (true, Some(tls)) = (clean, &mut self.tls) {
            tls.send_close_notify();
            // Best effort: give up at the first stalled slice.
            let _ = self.write_all(&[], |_, _| Err(String::new()));
        }
        self.sock.shutdown(Shutdown::Write);
        self.sock.shutdown(Shutdown::Read);
        self.credits = None;
    }

    /// Wait for the reader thread to exit (after [`close`](Self::close) and after the
    /// driver's channel receiver is gone, so it cannot block on either).
    pub(crate) fn join_reader(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
