//! A real etcd for tests and examples (feature `test-support`): the `etcd` binary
//! (Debian's `etcd-server`; `RPCX_ETCD_BIN` overrides the path) started on 127.0.0.1
//! with free ports and a temporary data directory, killed and removed on drop. Every
//! wait is bounded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long etcd may take to report healthy.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A private etcd server process.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Start etcd and wait until it is healthy.
    pub fn start() -> io::Result<EtcdServer> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir =
            std::env::temp_dir().join(format!("rpcx-etcd-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let mut s = EtcdServer { child: None, dir, client_port: free_port()?, peer_port: free_port()? };
        s.spawn()?;
        Ok(s)
    }

    /// The client endpoint, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kill the process at once (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same ports, with the data it had.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    /// Start again on the same ports with an empty data directory: every key and lease
    /// is gone, as when a registry is rebuilt.
    pub fn restart_empty(&mut self) -> io::Result<()> {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bin = std::env::var_os("RPCX_ETCD_BIN").unwrap_or_else(|| "etcd".into());
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log"))?;
        let child = Command::new(&bin)
            .arg("--name")
            .arg("rpcx-test")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("rpcx-test={peer}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {:?} ({e}): install Debian's etcd-server (apt-get install etcd-server) \
                         or set RPCX_ETCD_BIN",
                        bin
                    ),
                )
            })?;
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                    return Err(io::Error::other(format!("etcd exited ({status}):\n{log}")));
                }
            }
            if healthy(addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("etcd not healthy within {START_TIMEOUT:?}")))
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /health` answers `"health":"true"`.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.take(4096).read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A loopback port nobody listens on now.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
