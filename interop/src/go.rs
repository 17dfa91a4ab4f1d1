//! The Go side: building `interop/go`, the Go server as a child process, and the Go
//! client scenario driver.
//!
//! The binaries are built once per test process into `target/interop-go/` (override
//! the directory with `RPCX_INTEROP_GO_BIN_DIR`, the toolchain with `GO`). Without a
//! Go toolchain every test that needs one fails with a clear message: these tests are
//! the project's interop guarantee and never skip.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long `go build` may take (a cold module cache downloads rpcx and friends).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the Go server may take to print `LISTENING`.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Default bound on one Go client driver run (its own watchdog is 60 s + duration).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Paths of the built Go binaries.
#[derive(Debug, Clone)]
pub struct GoBinaries {
    /// `cmd/server`.
    pub server: PathBuf,
    /// `cmd/client`.
    pub client: PathBuf,
    /// `cmd/etcd`: a server registering through Go's rpcx-etcd plugin, and a client
    /// discovering through its etcd discovery.
    pub etcd: PathBuf,
    /// `cmd/redis`: a server registering through rpcx's in-tree Redis plugin, and a
    /// client discovering through rpcx-redis.
    pub redis: PathBuf,
    /// `cmd/consul`: a server registering through rpcx-consul's plugin, and a client
    /// discovering through its Consul discovery.
    pub consul: PathBuf,
    /// `cmd/zookeeper`: a server registering through Go's rpcx-zookeeper plugin, and a
    /// client discovering through its ZooKeeper discovery.
    pub zookeeper: PathBuf,
    /// `cmd/dns`: a client discovering through rpcx's in-tree DNS discovery.
    pub dns: PathBuf,
    /// `cmd/mdns`: a server registering through rpcx's mDNS plugin, and a client
    /// discovering through its mDNS discovery (run only in a network namespace).
    pub mdns: PathBuf,
    /// `cmd/otel`: a server and a client with rpcx-plugins' OpenTelemetry plugins and an
    /// in-memory span recorder (see [`crate::otel`]).
    pub otel: PathBuf,
}

/// The commands of the Go module (`interop/go/cmd/<name>`), built together.
const COMMANDS: &[&str] = &["server", "client", "etcd", "redis", "consul", "zookeeper", "dns", "mdns", "otel"];

/// `interop/go`, the Go module.
pub fn go_module_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

fn bin_dir() -> PathBuf {
    match std::env::var_os("RPCX_INTEROP_GO_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("interop-go"),
    }
}

/// Build the Go server and client driver (once per process) and return their paths.
///
/// # Panics
///
/// If `go` is not installed or the build fails: the message says why.
pub fn go_binaries() -> &'static GoBinaries {
    static BINS: OnceLock<Result<GoBinaries, String>> = OnceLock::new();
    match BINS.get_or_init(build) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn build() -> Result<GoBinaries, String> {
    let go = std::env::var_os("GO").unwrap_or_else(|| "go".into());
    let dir = bin_dir();
    // Build into a private directory, then rename into place: another test process
    // may be building or running the same binaries at the same time.
    let tmp = dir.join(format!("build-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    let mut out = tmp.clone().into_os_string();
    out.push("/");
    let mut cmd = Command::new(&go);
    cmd.arg("build")
        .arg("-o")
        .arg(&out)
        .args(COMMANDS.iter().map(|c| format!("./cmd/{c}")))
        .current_dir(go_module_dir());
    // The untagged rpcxio modules have no checksum-database entry (go.sum pins them).
    if std::env::var_os("GONOSUMDB").is_none() {
        cmd.env("GONOSUMDB", "github.com/rpcxio/*");
    }
    let run = match Run::spawn(cmd) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(format!(
                "INTEROP TESTS NEED GO: the Go toolchain `{}` was not found on PATH. Install Go >= 1.26 \
                 (https://go.dev/dl/) or set GO=/path/to/go. These tests build interop/go and never skip.",
                Path::new(&go).display()
            ));
        }
        Err(e) => return Err(format!("could not run `{} build`: {e}", Path::new(&go).display())),
    }
    .wait(BUILD_TIMEOUT);
    if run.timed_out || !run.status.is_some_and(|s| s.success()) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "`go build {}` in {} failed ({}):\n{}{}",
            COMMANDS.iter().map(|c| format!("./cmd/{c}")).collect::<Vec<_>>().join(" "),
            go_module_dir().display(),
            run.describe_status(),
            run.stdout,
            run.stderr
        ));
    }
    let bins = GoBinaries {
        server: dir.join("server"),
        client: dir.join("client"),
        etcd: dir.join("etcd"),
        redis: dir.join("redis"),
        consul: dir.join("consul"),
        zookeeper: dir.join("zookeeper"),
        dns: dir.join("dns"),
        mdns: dir.join("mdns"),
        otel: dir.join("otel"),
    };
    for name in COMMANDS {
        let dst = dir.join(name);
        std::fs::rename(tmp.join(name), &dst).map_err(|e| format!("move {name} to {}: {e}", dst.display()))?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(bins)
}

/// Read everything from `r` into a shared string (so a child never blocks on a full
/// pipe), optionally forwarding each line to `lines`.
fn drain<R: Read + Send + 'static>(
    r: R,
    sink: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&line);
                    if let Some(tx) = &lines {
                        let _ = tx.send(line.trim_end().to_owned());
                    }
                }
            }
        }
    })
}

/// Run the Go command `bin` with `args` to its end (killed after `limit`) and return
/// its stdout; panics with its whole output if it fails or times out. For the
/// registry commands' client modes (`cmd/etcd client ...`).
pub fn run_go(bin: &Path, args: &[&str], limit: Duration) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let run = Run::spawn(cmd).unwrap_or_else(|e| panic!("start {}: {e}", bin.display())).wait(limit);
    assert!(
        !run.timed_out && run.status.is_some_and(|s| s.success()),
        "{} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        bin.display(),
        run.describe_status(),
        run.stdout,
        run.stderr
    );
    run.stdout
}

/// A Go registry command's server mode (`cmd/etcd server ...`): serves `Arith` and
/// prints `REGISTERED <key>` once registered through Go's plugin. Killed on drop;
/// [`shutdown`](Self::shutdown) closes its stdin, which makes it call `Shutdown` (and
/// so unregister) and exit.
pub struct GoRegisteredServer {
    child: Child,
    /// The key it registered (`tcp@127.0.0.1:<port>`).
    pub key: String,
}

impl GoRegisteredServer {
    /// Start `bin` with `args` and wait (at most 30 s) for its `REGISTERED` line.
    pub fn start(bin: &Path, args: &[&str]) -> GoRegisteredServer {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(k) = line.strip_prefix("REGISTERED ") {
                    let _ = tx.send(k.to_owned());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(key) => GoRegisteredServer { child, key },
            Err(_) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("{} {args:?} did not register within 30 s:\n{err}", bin.display());
            }
        }
    }

    /// Close stdin: the Go server calls `Shutdown` (which unregisters) and exits
    /// (within 10 s, or this panics).
    pub fn shutdown(mut self) {
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the Go server did not exit within 10 s of its stdin closing");
    }

    /// SIGKILL: no unregistration.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GoRegisteredServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running child with its output drained in the background.
struct Run {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Run {
    fn spawn(mut cmd: Command) -> std::io::Result<Run> {
        Self::spawn_with_lines(&mut cmd, None)
    }

    fn spawn_with_lines(cmd: &mut Command, lines: Option<mpsc::Sender<String>>) -> std::io::Result<Run> {
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            drain(child.stdout.take().expect("piped stdout"), stdout.clone(), lines),
            drain(child.stderr.take().expect("piped stderr"), stderr.clone(), None),
        ];
        Ok(Run { child, stdout, stderr, readers, started: Instant::now() })
    }

    /// Wait for the child to exit, killing it after `limit`.
    fn wait(mut self, limit: Duration) -> Finished {
        let deadline = self.started + limit;
        let (status, timed_out) = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break (Some(s), false),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    break (self.child.wait().ok(), true);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => {
                    let _ = self.child.kill();
                    break (self.child.wait().ok(), false);
                }
            }
        };
        let elapsed = self.started.elapsed();
        // The pipes close when the child exits (grandchildren of `go build` may hold
        // them a little longer; do not wait for those forever).
        let join_deadline = Instant::now() + Duration::from_secs(5);
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < join_deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if r.is_finished() {
                let _ = r.join();
            }
        }
        let take = |s: &Arc<Mutex<String>>| s.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Finished { status, timed_out, elapsed, stdout: take(&self.stdout), stderr: take(&self.stderr) }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

struct Finished {
    status: Option<ExitStatus>,
    timed_out: bool,
    elapsed: Duration,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn describe_status(&self) -> String {
        match (self.timed_out, self.status) {
            (true, _) => format!("killed after {:?}", self.elapsed),
            (false, Some(s)) => s.to_string(),
            (false, None) => "unknown exit status".to_owned(),
        }
    }
}

/// The Go interop server (`cmd/server`) as a child process; killed on drop.
pub struct GoServer {
    run: Run,
    network: &'static str,
    addr: String,
    socket: Option<PathBuf>,
}

impl GoServer {
    /// Start on `127.0.0.1:0` (TCP); `auth` is the server's `-auth` token.
    pub fn tcp(auth: Option<&str>) -> GoServer {
        let mut args = vec!["-network", "tcp", "-addr", "127.0.0.1:0"];
        if let Some(t) = auth {
            args.extend(["-auth", t]);
        }
        Self::start("tcp", &args, None)
    }

    /// Start Go's `Serve("http", ..)` on `127.0.0.1:0`: rpcx through HTTP CONNECT only.
    pub fn http(auth: Option<&str>) -> GoServer {
        let mut args = vec!["-network", "http", "-addr", "127.0.0.1:0"];
        if let Some(t) = auth {
            args.extend(["-auth", t]);
        }
        Self::start("http", &args, None)
    }

    /// Start Go's `Serve("ws", ..)` on `127.0.0.1:0`: rpcx over WebSocket only.
    pub fn ws(auth: Option<&str>) -> GoServer {
        let mut args = vec!["-network", "ws", "-addr", "127.0.0.1:0"];
        if let Some(t) = auth {
            args.extend(["-auth", t]);
        }
        Self::start("ws", &args, None)
    }

    /// Start Go's `Serve("wss", ..)` on `127.0.0.1:0`: rpcx over WebSocket in TLS, with
    /// the certificate of [`crate::tls::test_tls`].
    pub fn wss(auth: Option<&str>) -> GoServer {
        let tls = crate::tls::test_tls();
        let (cert, key) = (tls.cert_pem.display().to_string(), tls.key_pem.display().to_string());
        let mut args = vec!["-network", "wss", "-addr", "127.0.0.1:0", "-cert", &cert, "-key", &key];
        if let Some(t) = auth {
            args.extend(["-auth", t]);
        }
        Self::start("wss", &args, None)
    }

    /// Start on a fresh unix socket.
    pub fn unix(name: &str, auth: Option<&str>) -> GoServer {
        let path = crate::unique_socket_path(name);
        let p = path.to_str().expect("utf-8 temp path").to_owned();
        let mut args = vec!["-network", "unix", "-addr", &p];
        if let Some(t) = auth {
            args.extend(["-auth", t]);
        }
        Self::start("unix", &args, Some(path.clone()))
    }

    fn start(network: &'static str, args: &[&str], socket: Option<PathBuf>) -> GoServer {
        let bins = go_binaries();
        let (tx, rx) = mpsc::channel();
        let mut cmd = Command::new(&bins.server);
        cmd.args(args);
        let run = Run::spawn_with_lines(&mut cmd, Some(tx))
            .unwrap_or_else(|e| panic!("start Go server {}: {e}", bins.server.display()));
        let addr = match rx.recv_timeout(LISTEN_TIMEOUT) {
            Ok(line) => match line.strip_prefix("LISTENING ") {
                Some(a) => a.trim().to_owned(),
                None => panic!("Go server printed {line:?} instead of `LISTENING <addr>`"),
            },
            Err(e) => {
                let f = run.wait(Duration::ZERO);
                panic!(
                    "Go server did not print `LISTENING <addr>` within {LISTEN_TIMEOUT:?} ({e}; {}):\nstdout:\n{}\nstderr:\n{}",
                    f.describe_status(),
                    f.stdout,
                    f.stderr
                );
            }
        };
        GoServer { run, network, addr, socket }
    }

    /// The address as the Go server printed it (`HOST:PORT` or a socket path).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `tcp` or `unix`.
    pub fn network(&self) -> &'static str {
        self.network
    }

    /// The address in rpcx form for [`rpcx_tokio::Client::connect`].
    pub fn rpcx_addr(&self) -> String {
        format!("{}@{}", self.network, self.addr)
    }

    /// What the server wrote to stderr so far (rpcx's error log).
    pub fn stderr(&self) -> String {
        self.run.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.run.child.try_wait(), Ok(None))
    }

    /// Kill the server now (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.run.child.kill();
        let _ = self.run.child.wait();
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The result of one Go client driver run.
#[derive(Debug)]
pub struct ClientRun {
    /// The scenario.
    pub scenario: String,
    /// The full command line (for messages).
    pub args: Vec<String>,
    /// Exit status (`None` if it could not be collected).
    pub status: Option<ExitStatus>,
    /// Killed at the time limit.
    pub timed_out: bool,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its stdout (`PASS`/`FAIL`/`INFO` lines).
    pub stdout: String,
    /// Its stderr (rpcx's log).
    pub stderr: String,
}

impl ClientRun {
    /// The last non-empty stdout line.
    pub fn last_line(&self) -> &str {
        self.stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
    }

    /// Whether the run printed `PASS <scenario>` last and exited 0.
    pub fn passed(&self) -> bool {
        !self.timed_out
            && self.status.is_some_and(|s| s.success())
            && self.last_line() == format!("PASS {}", self.scenario)
    }

    /// `INFO` lines.
    pub fn info_lines(&self) -> impl Iterator<Item = &str> {
        self.stdout.lines().filter_map(|l| l.strip_prefix("INFO "))
    }

    /// Panic with the whole output unless the scenario passed.
    #[track_caller]
    pub fn assert_pass(&self) {
        assert!(self.passed(), "Go client scenario `{}` did not pass\n{}", self.scenario, self.report());
    }

    /// Panic unless the run failed (exit 1, last line `FAIL <scenario>: ...`) with a
    /// detail containing `needle`.
    #[track_caller]
    pub fn assert_fail_containing(&self, needle: &str) {
        let prefix = format!("FAIL {}: ", self.scenario);
        let ok = !self.timed_out
            && self.status.and_then(|s| s.code()) == Some(1)
            && self.last_line().strip_prefix(&prefix).is_some_and(|d| d.contains(needle));
        assert!(ok, "expected scenario `{}` to FAIL with {needle:?}\n{}", self.scenario, self.report());
    }

    /// A printable account of the run.
    pub fn report(&self) -> String {
        let status = match (self.timed_out, self.status) {
            (true, _) => format!("KILLED after {:?} (time limit)", self.elapsed),
            (false, Some(s)) => format!("{s} after {:?}", self.elapsed),
            (false, None) => "unknown exit status".to_owned(),
        };
        format!(
            "command: client {}\nstatus: {status}\n--- stdout ---\n{}--- stderr (last 40 lines) ---\n{}",
            self.args.join(" "),
            self.stdout,
            tail(&self.stderr, 40)
        )
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}

/// Run the Go client driver: `client -scenario <scenario> <args...>`, killed after
/// [`CLIENT_TIMEOUT`].
pub fn go_client(scenario: &str, args: &[&str]) -> ClientRun {
    go_client_with_timeout(scenario, args, CLIENT_TIMEOUT)
}

/// [`go_client`] with an explicit time limit.
pub fn go_client_with_timeout(scenario: &str, args: &[&str], limit: Duration) -> ClientRun {
    let bins = go_binaries();
    let mut all = vec!["-scenario".to_owned(), scenario.to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    let mut cmd = Command::new(&bins.client);
    cmd.args(&all);
    let f = Run::spawn(cmd).unwrap_or_else(|e| panic!("run Go client {}: {e}", bins.client.display())).wait(limit);
    ClientRun {
        scenario: scenario.to_owned(),
        args: all,
        status: f.status,
        timed_out: f.timed_out,
        elapsed: f.elapsed,
        stdout: f.stdout,
        stderr: f.stderr,
    }
}
