//! Go client driver (`interop/go/cmd/client`) against the Rust server (`rpcx_tokio`
//! serving `rpcx_interop::router`). One test per scenario; each starts its own server
//! on `127.0.0.1:0` or a fresh unix socket, so tests run in parallel without clashes.

use rpcx_interop::{RustServer, go_client};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Run `scenario` from the Go driver against a fresh Rust TCP server.
fn tcp(scenario: &str) {
    let server = RustServer::tcp(None);
    server.go_client(scenario, &[]).assert_pass();
}

/// Run `scenario` from the Go driver against a fresh Rust unix-socket server.
fn unix(scenario: &str) {
    let server = RustServer::unix(scenario, None);
    server.go_client(scenario, &[]).assert_pass();
}

#[test]
fn json() {
    tcp("json");
}

#[test]
fn msgpack() {
    tcp("msgpack");
}

#[test]
fn protobuf() {
    tcp("protobuf");
}

#[test]
fn raw() {
    tcp("raw");
}

#[test]
fn gzip_small() {
    tcp("gzip_small");
}

#[test]
fn gzip_large() {
    tcp("gzip_large");
}

#[test]
fn metadata() {
    tcp("metadata");
}

#[test]
fn error() {
    tcp("error");
}

#[test]
fn unknown_service() {
    tcp("unknown_service");
}

#[test]
fn unknown_method() {
    tcp("unknown_method");
}

#[test]
fn oneway() {
    tcp("oneway");
}

#[test]
fn heartbeat() {
    let server = RustServer::tcp(None);
    server.go_client("heartbeat", &[]).assert_pass();
    assert!(server.heartbeats() >= 5, "the Rust server counted {} heartbeats", server.heartbeats());
}

#[test]
fn deadline() {
    tcp("deadline");
}

#[test]
fn push() {
    tcp("push");
}

#[test]
fn big() {
    tcp("big");
}

#[test]
fn concurrent() {
    tcp("concurrent");
}

#[test]
fn slow_deadline() {
    tcp("slow_deadline");
}

#[test]
fn auth_ok() {
    let server = RustServer::tcp(Some("s3cret"));
    server.go_client("auth_ok", &["-auth", "s3cret"]).assert_pass();
}

#[test]
fn auth_fail() {
    let server = RustServer::tcp(Some("s3cret"));
    server.go_client("auth_fail", &[]).assert_pass();
}

/// Negative controls: the driver must notice a wrong token, a missing token, and an
/// auth_fail scenario against a server without auth.
#[test]
fn auth_negative_controls() {
    let server = RustServer::tcp(Some("s3cret"));
    server.go_client("auth_ok", &["-auth", "not-the-secret"]).assert_fail_containing("auth failed");
    server.go_client("msgpack", &[]).assert_fail_containing("auth failed");
    let open = RustServer::tcp(None);
    open.go_client("auth_fail", &[]).assert_fail_containing("succeeded");
}

/// Two Rust servers; the second is closed (ServerHandle::close) 2 s into a 5 s run of
/// back-to-back Failover calls: every call must still succeed.
#[test]
fn failover() {
    let s1 = RustServer::tcp(None);
    let mut s2 = RustServer::tcp(None);
    let h2 = s2.take_handle().expect("handle");
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    s2.runtime().spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), h2.close()).await;
        flag.store(true, Ordering::SeqCst);
    });
    let run = go_client("failover", &["-addr", s1.addr(), "-addr2", s2.addr(), "-duration", "5s"]);
    run.assert_pass();
    assert!(closed.load(Ordering::SeqCst), "server 2 was not closed during the run\n{}", run.report());
    // Both servers must have been used before the close.
    let info = run.info_lines().find(|l| l.starts_with("failover ")).unwrap_or_default().to_owned();
    assert!(info.contains(s1.addr()) && info.contains(s2.addr()), "not both servers used: {info}\n{}", run.report());
}

#[test]
fn unix_msgpack() {
    unix("msgpack");
}

#[test]
fn unix_protobuf() {
    unix("protobuf");
}

#[test]
fn unix_gzip_large() {
    unix("gzip_large");
}

#[test]
fn unix_push() {
    unix("push");
}

#[test]
fn unix_big() {
    unix("big");
}

#[test]
fn unix_heartbeat() {
    let server = RustServer::unix("heartbeat", None);
    server.go_client("heartbeat", &["-duration", "1500ms"]).assert_pass();
}

#[test]
fn unix_auth_fail() {
    let server = RustServer::unix("auth_fail", Some("s3cret"));
    server.go_client("auth_fail", &[]).assert_pass();
}

/// Every scenario of `all` in one driver run over one unix-socket connection set.
#[test]
fn unix_all() {
    let server = RustServer::unix("all", None);
    server.go_client("all", &[]).assert_pass();
}
