//! Network namespaces for mDNS tests and examples, so that they never multicast on a
//! real network: a program re-executes itself under `unshare --net` (as root; other
//! users get a user namespace too) in a namespace with only `lo`, set up for multicast:
//!
//! ```text
//! ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo
//! ip addr add 10.253.0.1/32 dev lo   # zeroconf publishes only non-loopback addresses
//! ```
//!
//! The child finds [`INSIDE_ENV`] set; tests refuse to run without it.

use super::MdnsConfig;
use std::ffi::OsStr;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Set (to `1`) in processes started inside a namespace by this module.
pub const INSIDE_ENV: &str = "RPCX_MDNS_NETNS";

/// A non-loopback address on the namespace's `lo` (Go's zeroconf server refuses to
/// start without one; it is only in the namespace).
pub const EXTRA_ADDR: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 1);

const SETUP: &str = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo \
                     && ip addr add 10.253.0.1/32 dev lo && exec \"$0\" \"$@\"";

/// Whether this process runs inside a namespace set up here.
pub fn inside() -> bool {
    std::env::var_os(INSIDE_ENV).is_some()
}

/// `program args...` to be run in a fresh network namespace: `unshare --net` as root,
/// else inside a user namespace too (`--user --map-root-user`, where the kernel allows
/// unprivileged user namespaces).
pub fn command_in_namespace<S: AsRef<OsStr>>(program: &Path, args: impl IntoIterator<Item = S>) -> Command {
    let mut cmd = Command::new("unshare");
    if !is_root() {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.args(["--net", "--", "sh", "-c", SETUP]).arg(program).args(args).env(INSIDE_ENV, "1");
    cmd
}

/// Whether the effective user id is 0 (`/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// Wait up to `limit` for `child`; killed (and an error) when it takes longer.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> io::Result<ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if t0.elapsed() >= limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("did not finish within {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the `#[ignore]`d test `name` of the current test binary in a fresh namespace
/// (output not captured) and return its exit status, within `limit`.
pub fn run_test_in_namespace(name: &str, limit: Duration) -> io::Result<ExitStatus> {
    let exe = std::env::current_exe()?;
    let mut child =
        command_in_namespace(&exe, [name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]).spawn()?;
    wait_bounded(&mut child, limit)
}

/// Panic unless inside a namespace (a child test run by hand must not pass).
pub fn require_inside(parent: &str) {
    assert!(inside(), "this test multicasts and runs only inside a network namespace, started by `{parent}`");
}

/// A config for namespace tests: multicast through 127.0.0.1, short TTL and intervals.
pub fn config() -> MdnsConfig {
    MdnsConfig::new()
        .interface(Ipv4Addr::LOCALHOST)
        .ttl(Duration::from_secs(30))
        .update_interval(Duration::from_secs(1))
        .query_interval(Duration::from_millis(500))
        .browse_timeout(Duration::from_secs(2))
}
