//! Go client driver (`interop/go/cmd/client`) against the Rust server (`rpcx_interop::router`)
//! on every runtime. The scenario list is written once ([`go_client_suite!`]) and
//! instantiated per runtime: `tokio_server::json`, `std_server::json`,
//! `smol_server::json`, ... Each test starts its own server on `127.0.0.1:0` or a fresh
//! unix socket, so tests run in parallel without clashes.

use rpcx_interop::{Runtime, RustServer, go_client};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Run `scenario` from the Go driver against a fresh TCP server on `rt`.
fn over_tcp(rt: Runtime, scenario: &str) {
    let server = RustServer::tcp_on(rt, None);
    server.go_client(scenario, &[]).assert_pass();
}

/// Run `scenario` from the Go driver, tunnelling through HTTP CONNECT (`-network
/// http`), against a fresh TCP server on `rt` (which takes CONNECT on its rpcx port).
fn over_http(rt: Runtime, scenario: &str) {
    let server = RustServer::tcp_on(rt, None);
    server.go_client(scenario, &["-network", "http"]).assert_pass();
}

/// Run `scenario` from the Go driver over WebSocket (`-network ws`: x/net's client,
/// which sends text frames) against a fresh TCP server on `rt`.
fn over_ws(rt: Runtime, scenario: &str) {
    let server = RustServer::tcp_on(rt, None);
    server.go_client(scenario, &["-network", "ws"]).assert_pass();
}

/// Run `scenario` from the Go driver against a fresh unix-socket server on `rt`.
fn over_unix(rt: Runtime, scenario: &str) {
    let server = RustServer::unix_on(rt, scenario, None);
    server.go_client(scenario, &[]).assert_pass();
}

fn heartbeat(rt: Runtime) {
    let server = RustServer::tcp_on(rt, None);
    server.go_client("heartbeat", &[]).assert_pass();
    assert!(server.heartbeats() >= 5, "the Rust server counted {} heartbeats", server.heartbeats());
}

fn auth_ok(rt: Runtime) {
    let server = RustServer::tcp_on(rt, Some("s3cret"));
    server.go_client("auth_ok", &["-auth", "s3cret"]).assert_pass();
}

fn auth_fail(rt: Runtime) {
    let server = RustServer::tcp_on(rt, Some("s3cret"));
    server.go_client("auth_fail", &[]).assert_pass();
}

/// Negative controls: the driver must notice a wrong token, a missing token, and an
/// auth_fail scenario against a server without auth.
fn auth_negative_controls(rt: Runtime) {
    let server = RustServer::tcp_on(rt, Some("s3cret"));
    server.go_client("auth_ok", &["-auth", "not-the-secret"]).assert_fail_containing("auth failed");
    server.go_client("msgpack", &[]).assert_fail_containing("auth failed");
    let open = RustServer::tcp_on(rt, None);
    open.go_client("auth_fail", &[]).assert_fail_containing("succeeded");
}

/// Two servers; the second is closed 2 s into a 5 s run of back-to-back Failover calls:
/// every call must still succeed.
fn failover(rt: Runtime) {
    let s1 = RustServer::tcp_on(rt, None);
    let mut s2 = RustServer::tcp_on(rt, None);
    let closed = s2.close_after(Duration::from_secs(2));
    let run = go_client("failover", &["-addr", s1.addr(), "-addr2", s2.addr(), "-duration", "5s"]);
    run.assert_pass();
    assert!(closed.load(Ordering::SeqCst), "server 2 was not closed during the run\n{}", run.report());
    // Both servers must have been used before the close.
    let info = run.info_lines().find(|l| l.starts_with("failover ")).unwrap_or_default().to_owned();
    assert!(info.contains(s1.addr()) && info.contains(s2.addr()), "not both servers used: {info}\n{}", run.report());
}

fn unix_heartbeat(rt: Runtime) {
    let server = RustServer::unix_on(rt, "heartbeat", None);
    server.go_client("heartbeat", &["-duration", "1500ms"]).assert_pass();
}

fn unix_auth_fail(rt: Runtime) {
    let server = RustServer::unix_on(rt, "auth_fail", Some("s3cret"));
    server.go_client("auth_fail", &[]).assert_pass();
}

/// Every scenario of `all` in one driver run over one unix-socket server.
fn unix_all(rt: Runtime) {
    let server = RustServer::unix_on(rt, "all", None);
    server.go_client("all", &[]).assert_pass();
}

/// One `#[test]` per plain scenario (named like the test), run with `$via` on `$rt`.
macro_rules! scenarios {
    ($rt:expr, $via:ident; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            $via($rt, stringify!($name));
        }
    )*};
}

/// One `#[test]` per scenario with its own setup (the function of the same name).
macro_rules! custom {
    ($rt:expr; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            super::$name($rt);
        }
    )*};
}

/// Every scenario for the server runtime `$rt`, in module `$module` (plain scenarios
/// over a unix socket in `$module::unix`).
macro_rules! go_client_suite {
    ($module:ident, $rt:expr) => {
        mod $module {
            use super::*;

            scenarios!($rt, over_tcp;
                json,
                msgpack,
                protobuf,
                raw,
                gzip_small,
                gzip_large,
                metadata,
                error,
                unknown_service,
                unknown_method,
                oneway,
                deadline,
                push,
                big,
                concurrent,
                slow_deadline,
            );

            custom!($rt;
                heartbeat,
                auth_ok,
                auth_fail,
                auth_negative_controls,
                failover,
                unix_heartbeat,
                unix_auth_fail,
                unix_all,
            );

            mod http_connect {
                use super::super::*;

                scenarios!($rt, over_http; msgpack, json, gzip_large, push, big, concurrent, metadata);
            }

            mod websocket {
                use super::super::*;

                scenarios!($rt, over_ws; msgpack, json, gzip_large, push, big, concurrent, metadata);
            }

            mod unix {
                use super::super::*;

                scenarios!($rt, over_unix; msgpack, protobuf, gzip_large, push, big);
            }
        }
    };
}

go_client_suite!(tokio_server, Runtime::Tokio);
go_client_suite!(std_server, Runtime::Std);
go_client_suite!(smol_server, Runtime::Smol);
