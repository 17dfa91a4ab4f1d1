//! `rpcx dump --listen A --upstream B`: a proxy that prints every frame both ways.

use crate::decode::print_frame;
use crate::frame::FrameReader;
use crate::{Failure, Outcome};
use clap::Args;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

#[derive(Args, Debug)]
pub(crate) struct DumpArgs {
    /// Listen here: host:port, tcp@host:port (port 0: any free port) or unix@/path.
    #[arg(long)]
    listen: String,
    /// Forward to this server: host:port, tcp@host:port or unix@/path.
    #[arg(long)]
    upstream: String,
    /// One JSON object per frame.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    schema: crate::decode::SchemaArgs,
    /// Stop after this many connections have ended (default: run until killed).
    #[arg(long, value_name = "N")]
    max_conns: Option<u64>,
}

/// A TCP `host:port` or a unix socket path.
#[derive(Clone, Debug)]
enum Endpoint {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(hp) => write!(f, "tcp@{hp}"),
            Endpoint::Unix(p) => write!(f, "unix@{}", p.display()),
        }
    }
}

fn endpoint(a: &str, flag: &str) -> Result<Endpoint, Failure> {
    if let Some(path) = a.strip_prefix("unix@") {
        if path.is_empty() {
            return Err(Failure::usage(format!("bad {flag} address {a:?}: empty socket path")));
        }
        return Ok(Endpoint::Unix(path.into()));
    }
    let hp = a.strip_prefix("tcp@").unwrap_or(a);
    let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !ok || hp.contains('@') {
        return Err(Failure::usage(format!(
            "bad {flag} address {a:?}: expected host:port, tcp@host:port or unix@/path"
        )));
    }
    Ok(Endpoint::Tcp(hp.to_owned()))
}

/// Any connected stream.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

async fn dial(e: &Endpoint) -> std::io::Result<Box<dyn Duplex>> {
    Ok(match e {
        Endpoint::Tcp(hp) => {
            let s = TcpStream::connect(hp).await?;
            let _ = s.set_nodelay(true);
            Box::new(s)
        }
        Endpoint::Unix(p) => Box::new(UnixStream::connect(p).await?),
    })
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    async fn bind(e: &Endpoint) -> std::io::Result<(Self, Endpoint)> {
        Ok(match e {
            Endpoint::Tcp(hp) => {
                let l = TcpListener::bind(hp).await?;
                let local = l.local_addr()?;
                (Listener::Tcp(l), Endpoint::Tcp(local.to_string()))
            }
            Endpoint::Unix(p) => (Listener::Unix(UnixListener::bind(p)?), e.clone()),
        })
    }

    async fn accept(&self) -> std::io::Result<(Box<dyn Duplex>, String)> {
        Ok(match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                (Box::new(s), peer.to_string())
            }
            Listener::Unix(l) => (Box::new(l.accept().await?.0), "unix peer".to_owned()),
        })
    }
}

pub(crate) async fn run(a: DumpArgs) -> Outcome {
    let listen = endpoint(&a.listen, "--listen")?;
    let upstream = endpoint(&a.upstream, "--upstream")?;
    let schema = a.schema.load()?;
    let (listener, local) =
        Listener::bind(&listen).await.map_err(|e| Failure::failed(format!("listen on {listen}: {e}")))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {local}, forwarding to {upstream}");
        let _ = out.flush();
    }
    let ended = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(AtomicU64::new(0));
    let mut next_id = 0u64;
    let result = loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = ended.notified() => {
                if a.max_conns.is_some_and(|m| done.load(Ordering::SeqCst) >= m) {
                    break Ok(());
                }
                continue;
            }
        };
        let (client, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rpcx dump: accept: {e}");
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        let (upstream, json, ended, done, schema) =
            (upstream.clone(), a.json, ended.clone(), done.clone(), schema.clone());
        tokio::spawn(async move {
            match dial(&upstream).await {
                Ok(server) => {
                    eprintln!("rpcx dump: conn {id}: {peer} <-> {upstream}");
                    let (cr, cw) = tokio::io::split(client);
                    let (sr, sw) = tokio::io::split(server);
                    let up = tokio::spawn(pump(cr, sw, id, "client->server", json, schema.clone()));
                    let down = tokio::spawn(pump(sr, cw, id, "server->client", json, schema));
                    let _ = up.await;
                    let _ = down.await;
                    eprintln!("rpcx dump: conn {id} closed");
                }
                Err(e) => eprintln!("rpcx dump: conn {id}: upstream {upstream}: {e}"),
            }
            done.fetch_add(1, Ordering::SeqCst);
            ended.notify_one();
        });
    };
    if let Endpoint::Unix(p) = &listen {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Forward one direction, decoding what passes; a decode error stops the decoding of
/// that direction (reported once), never the forwarding.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    id: u64,
    dir: &str,
    json: bool,
    schema: Option<prost_reflect::DescriptorPool>,
) {
    let mut reader = FrameReader::new(schema);
    let mut decoding = true;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if decoding {
            reader.feed(&buf[..n]);
            let mut out = std::io::stdout().lock();
            loop {
                match reader.next_frame() {
                    Ok(Some(view)) => {
                        let extra = [("conn", id.into()), ("dir", dir.into())];
                        let _ = print_frame(&mut out, &view, json, &format!("[{id} {dir}] "), &extra);
                    }
                    Ok(None) => break,
                    Err(m) => {
                        eprintln!("rpcx dump: conn {id} {dir}: {m}; forwarding without decoding");
                        decoding = false;
                        break;
                    }
                }
            }
            let _ = out.flush();
        }
    }
    if decoding {
        if let Err(m) = reader.finish() {
            eprintln!("rpcx dump: conn {id} {dir}: {m}");
        }
    }
    let _ = to.shutdown().await;
}
