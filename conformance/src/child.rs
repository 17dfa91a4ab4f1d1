//! Servers in child processes, for the examples that measure a server's memory (so the
//! connecting side is not counted): the example runs itself again with `--serve ...`.

use crate::runtimes::{Smol, Std, Tokio};
use crate::{ServeOpts, ServerRt};
use rpcx_core::service::Router;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

/// The server runtime called `name` (`tokio`, `smol` or `std`).
pub fn runtime(name: &str) -> Box<dyn ServerRt> {
    match name {
        "tokio" => Box::new(Tokio),
        "smol" => Box::new(Smol),
        "std" => Box::new(Std),
        other => panic!("unknown runtime {other} (tokio, smol, std)"),
    }
}

/// The child's side: serve `router` on runtime `name`, print the address on the first
/// line of stdout, and serve until stdin closes.
pub fn serve_until_stdin_closes(name: &str, router: Router, opts: ServeOpts) {
    crate::faults::raise_fd_limit();
    let server = runtime(name).serve(router, opts);
    println!("{}", server.address());
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.close();
}

/// A server in a child process of this one.
pub struct ChildServer {
    child: Child,
    /// Its address (`tcp@...`).
    pub addr: String,
}

impl ChildServer {
    /// Run this executable again with `args` (its `main` must call
    /// [`serve_until_stdin_closes`] for them).
    pub fn start(args: &[&str]) -> ChildServer {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut addr = String::new();
        BufReader::new(child.stdout.take().expect("child stdout")).read_line(&mut addr).expect("address");
        ChildServer { child, addr: addr.trim().to_owned() }
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`); Linux only.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("/proc (Linux)");
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).expect("status field");
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("value")
    }

    /// A numeric field of `/proc/<pid>/status` (`Threads`); Linux only.
    pub fn status_count(&self, field: &str) -> u64 {
        self.status_kib(field)
    }

    /// Whether the process is still running (it did not crash).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Close its stdin and wait for it to end; its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().expect("wait for the server process")
    }
}
