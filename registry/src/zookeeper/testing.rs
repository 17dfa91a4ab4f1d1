//! A real ZooKeeper for tests and examples (feature `test-support`): Debian's
//! `zookeeper` (3.8; its jars in `/usr/share/java`, `RPCX_ZK_CLASSPATH` overrides the
//! class path, `RPCX_JAVA` the `java` binary) run standalone on 127.0.0.1 with a free
//! port and a temporary data directory, the admin server off, killed and removed on drop.
//! Every wait is bounded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long ZooKeeper may take to report serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The jars ZooKeeper's standalone server needs, as Debian installs them.
const DEFAULT_CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/zookeeper-jute.jar:\
                                 /usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-nop.jar";

/// The server's tick: sessions may last 2 to 20 ticks (1 s to 10 s).
pub const TICK: Duration = Duration::from_millis(500);

/// A private ZooKeeper server process.
#[derive(Debug)]
pub struct ZkServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl ZkServer {
    /// Start ZooKeeper and wait until it serves.
    pub fn start() -> io::Result<ZkServer> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir =
            std::env::temp_dir().join(format!("rpcx-zk-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let port = crate::etcd::testing::free_port()?;
        let mut s = ZkServer { child: None, dir, port };
        s.spawn()?;
        Ok(s)
    }

    /// The server, `127.0.0.1:<port>`, for [`ZkConfig::new`](super::ZkConfig::new).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kill the process at once (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port, with the data (and sessions) it had.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> io::Result<()> {
        std::fs::create_dir_all(self.dir.join("data"))?;
        let cfg = self.dir.join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "dataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\ntickTime={}\n\
                 admin.enableServer=false\n4lw.commands.whitelist=srvr\n",
                self.dir.join("data").display(),
                self.port,
                TICK.as_millis()
            ),
        )?;
        let java = std::env::var_os("RPCX_JAVA").unwrap_or_else(|| "java".into());
        let classpath = std::env::var_os("RPCX_ZK_CLASSPATH").unwrap_or_else(|| DEFAULT_CLASSPATH.into());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("zookeeper.log"))?;
        let child = Command::new(&java)
            .arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("-Dzookeeper.admin.enableServer=false")
            .arg("-Dzookeeper.jmx.log4j.disable=true")
            .arg("-cp")
            .arg(&classpath)
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {java:?} ({e}): install Debian's zookeeper (apt-get install zookeeper)"),
                )
            })?;
        self.child = Some(child);
        self.wait_serving()
    }

    fn wait_serving(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default();
                    return Err(io::Error::other(format!(
                        "ZooKeeper exited ({status}); are Debian's zookeeper jars installed?\n{log}"
                    )));
                }
            }
            if serving(addr) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("ZooKeeper not serving within {START_TIMEOUT:?}")))
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `srvr` four-letter word answers with the server's mode once it serves.
fn serving(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"srvr").is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.take(4096).read_to_string(&mut body);
    body.contains("Mode: standalone")
}
