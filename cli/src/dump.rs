//! `rpcx dump --listen A --upstream B`: a proxy that prints every frame both ways.

use crate::decode::print_frame;
use crate::frame::FrameReader;
use crate::{Failure, Outcome};
use clap::Args;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Args, Debug)]
pub(crate) struct DumpArgs {
    /// Listen here (host:port or tcp@host:port; port 0: any free port).
    #[arg(long)]
    listen: String,
    /// Forward to this server (host:port or tcp@host:port).
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

fn tcp_part(a: &str, flag: &str) -> Result<String, Failure> {
    let hp = a.strip_prefix("tcp@").unwrap_or(a);
    let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !ok || hp.contains('@') {
        return Err(Failure::usage(format!("bad {flag} address {a:?}: expected host:port or tcp@host:port")));
    }
    Ok(hp.to_owned())
}

pub(crate) async fn run(a: DumpArgs) -> Outcome {
    let listen = tcp_part(&a.listen, "--listen")?;
    let upstream = tcp_part(&a.upstream, "--upstream")?;
    let schema = a.schema.load()?;
    let listener = TcpListener::bind(&listen).await.map_err(|e| Failure::failed(format!("listen on {listen}: {e}")))?;
    let local = listener.local_addr().map_err(|e| Failure::failed(e.to_string()))?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on tcp@{local}, forwarding to tcp@{upstream}");
        let _ = out.flush();
    }
    let ended = Arc::new(tokio::sync::Notify::new());
    let done = Arc::new(AtomicU64::new(0));
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = ended.notified() => {
                if a.max_conns.is_some_and(|m| done.load(Ordering::SeqCst) >= m) {
                    return Ok(());
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
            match TcpStream::connect(&upstream).await {
                Ok(server) => {
                    eprintln!("rpcx dump: conn {id}: {peer} <-> {upstream}");
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
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
    }
}

/// Forward one direction, decoding what passes; a decode error stops the decoding of
/// that direction (reported once), never the forwarding.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
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
