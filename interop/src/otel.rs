//! The Go side of the OpenTelemetry interop tests (`interop/go/cmd/otel`): a Go server
//! and a Go client with rpcx-plugins' OpenTelemetry plugins, whose recorded spans come
//! back as [`GoSpan`]s.

use crate::go::{go_binaries, run_go};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the Go server may take to print `LISTENING`, and to print its spans and
/// exit once its stdin closed.
const WAIT: Duration = Duration::from_secs(30);

/// One span recorded on the Go side (a `SPAN <json>` line of `cmd/otel`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct GoSpan {
    /// Span name (`rpcx.service.Arith.Mul`, `rpcx.client.Arith.Mul`, `rpcx.AcceptConn`, ...).
    pub name: String,
    /// `server`, `client`, `internal`, ...
    pub kind: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id, `""` for a root span.
    pub parent_span_id: String,
    /// Whether the parent came from another process (extracted from metadata).
    pub parent_remote: bool,
    /// The sampled flag.
    pub sampled: bool,
    /// Attributes, values as Go's `attribute.Value.Emit` writes them.
    pub attributes: BTreeMap<String, String>,
    /// Event names in order.
    pub events: Vec<String>,
    /// `Unset`, `Error` or `Ok`.
    pub status_code: String,
    /// The status description (the error text for `Error`).
    pub status_description: String,
}

/// The spans in `stdout` (its `SPAN <json>` lines).
pub fn parse_spans(stdout: &str) -> Vec<GoSpan> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("SPAN "))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("bad SPAN line {j:?}: {e}")))
        .collect()
}

/// The one span named `name` among `spans`; panics (listing them) unless there is
/// exactly one.
#[track_caller]
pub fn only_span<'a>(spans: &'a [GoSpan], name: &str) -> &'a GoSpan {
    let found: Vec<&GoSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert!(found.len() == 1, "expected one Go span {name:?}, found {}: {spans:#?}", found.len());
    found[0]
}

/// `otel server`: the interop services with rpcx-plugins' server plugin, on
/// `127.0.0.1:<free port>`. Killed on drop; [`finish`](Self::finish) stops it and
/// returns its spans.
pub struct GoOtelServer {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: String,
    lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl GoOtelServer {
    /// Start it and wait for its `LISTENING` line.
    pub fn start() -> GoOtelServer {
        let bin = &go_binaries().otel;
        let mut child = Command::new(bin)
            .args(["server", "-addr", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = GoOtelServer { child, stdin, addr: String::new(), lines, stderr: Some(stderr) };
        match server.lines.recv_timeout(WAIT) {
            Ok(line) => match line.strip_prefix("LISTENING ") {
                Some(a) => server.addr = a.trim().to_owned(),
                None => panic!("otel server printed {line:?} instead of `LISTENING <addr>`"),
            },
            Err(e) => {
                let err = server.kill_and_stderr();
                panic!("otel server did not print `LISTENING <addr>` within {WAIT:?} ({e}):\n{err}");
            }
        }
        server
    }

    /// `tcp@HOST:PORT`.
    pub fn rpcx_addr(&self) -> String {
        format!("tcp@{}", self.addr)
    }

    /// Close its stdin: it shuts down (waiting for the requests in flight), prints its
    /// spans and exits. Returns the spans.
    pub fn finish(mut self) -> Vec<GoSpan> {
        drop(self.stdin.take());
        let mut out = String::new();
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) if line == "DONE" => break,
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(e) => {
                    let err = self.kill_and_stderr();
                    panic!("otel server did not print DONE within {WAIT:?} ({e}):\nstdout:\n{out}\nstderr:\n{err}");
                }
            }
        }
        let _ = self.child.wait();
        parse_spans(&out)
    }

    fn kill_and_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default()
    }
}

impl Drop for GoOtelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `otel client -addr <rpcx_addr> -a <a> -b <b>`: Arith.Mul {a, b}, then Arith.Error
/// {a}, through a Go XClient with rpcx-plugins' client plugin. Returns its spans;
/// panics with its output unless it printed `OK`.
pub fn go_otel_client(rpcx_addr: &str, a: i64, b: i64) -> Vec<GoSpan> {
    let (a, b) = (a.to_string(), b.to_string());
    let out = run_go(&go_binaries().otel, &["client", "-addr", rpcx_addr, "-a", &a, "-b", &b], Duration::from_secs(60));
    assert_eq!(out.lines().last(), Some("OK"), "otel client did not print OK:\n{out}");
    parse_spans(&out)
}
