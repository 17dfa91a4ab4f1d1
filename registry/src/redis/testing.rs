//! A real Redis for tests and examples (feature `test-support`): `redis-server`
//! (Debian's `redis-server`; `RPCX_REDIS_BIN` overrides the path) on 127.0.0.1 with a
//! free port, no persistence and a temporary directory, killed and removed on drop.
//! Every wait is bounded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer `PING`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private redis-server process.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    refuse_config: bool,
}

impl RedisServer {
    /// Start redis-server and wait until it answers.
    pub fn start() -> io::Result<RedisServer> {
        Self::start_with(false)
    }

    /// Start one on which `CONFIG` is disabled, as on managed Redis services, so
    /// keyspace notifications cannot be enabled.
    pub fn start_without_config() -> io::Result<RedisServer> {
        Self::start_with(true)
    }

    fn start_with(refuse_config: bool) -> io::Result<RedisServer> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rpcx-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let port = crate::etcd::testing::free_port()?;
        let mut s = RedisServer { child: None, dir, port, refuse_config };
        s.spawn()?;
        Ok(s)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>` (the form Go's libkv takes).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the process at once (SIGKILL). Without persistence, every key is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port (empty: there is no persistence).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bin = std::env::var_os("RPCX_REDIS_BIN").unwrap_or_else(|| "redis-server".into());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("redis.log"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--daemonize")
            .arg("no");
        if self.refuse_config {
            cmd.arg("--rename-command").arg("CONFIG").arg("");
        }
        let child = cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot run {bin:?} ({e}): install Debian's redis-server (apt-get install redis-server) \
                     or set RPCX_REDIS_BIN"
                ),
            )
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                    return Err(io::Error::other(format!("redis-server exited ({status}):\n{log}")));
                }
            }
            if pong(addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("redis-server not up within {START_TIMEOUT:?}")))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pong(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
