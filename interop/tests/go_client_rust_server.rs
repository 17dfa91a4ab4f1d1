//! Go client driver (`interop/go/cmd/client`) against the Rust server (`rpcx_interop::router`)
//! on every runtime. The scenario list is written once ([`go_client_suite!`]) and
//! instantiated per runtime: `tokio_server::json`, `std_server::json`,
//! `smol_server::json`, ... Each test starts its own server on `127.0.0.1:0` or a fresh
//! unix socket, so tests run in parallel without clashes.

use rpcx_interop::{Runtime, RustServer, go_client};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How the Go driver reaches the server: plain TCP, an HTTP CONNECT tunnel (`-network
/// http`, which the Rust server takes on its rpcx port), WebSocket (`-network ws`:
/// x/net's client, which sends text frames), or WebSocket in TLS.
const TCP: &[&str] = &[];
const HTTP: &[&str] = &["-network", "http"];
const WS: &[&str] = &["-network", "ws"];
/// WebSocket in TLS: the server is a `wss@` one with the test certificate, which the
/// driver trusts through `-ca` (added by [`RustServer::go_client`]).
const WSS: &[&str] = &["-network", "wss"];

/// A fresh server on `rt` for the driver to reach through `via`.
fn start(rt: Runtime, via: &[&str], auth: Option<&str>) -> RustServer {
    if via == WSS { RustServer::wss_on(rt, auth) } else { RustServer::tcp_on(rt, auth) }
}

/// Run `scenario` from the Go driver against a fresh TCP server on `rt`, through `via`.
fn over(rt: Runtime, via: &[&str], scenario: &str) {
    let server = start(rt, via, None);
    server.go_client(scenario, via).assert_pass();
}

/// Run `scenario` from the Go driver against a fresh unix-socket server on `rt`.
fn over_unix(rt: Runtime, _via: &[&str], scenario: &str) {
    let server = RustServer::unix_on(rt, scenario, None);
    server.go_client(scenario, &[]).assert_pass();
}

/// `args` after the transport flags of `via`.
fn with<'a>(via: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    [via, args].concat()
}

fn heartbeat(rt: Runtime, via: &[&str]) {
    let server = start(rt, via, None);
    server.go_client("heartbeat", via).assert_pass();
    assert!(server.heartbeats() >= 5, "the Rust server counted {} heartbeats", server.heartbeats());
}

fn auth_ok(rt: Runtime, via: &[&str]) {
    let server = start(rt, via, Some("s3cret"));
    server.go_client("auth_ok", &with(via, &["-auth", "s3cret"])).assert_pass();
}

fn auth_fail(rt: Runtime, via: &[&str]) {
    let server = start(rt, via, Some("s3cret"));
    server.go_client("auth_fail", via).assert_pass();
}

/// Negative controls: the driver must notice a wrong token, a missing token, and an
/// auth_fail scenario against a server without auth.
fn auth_negative_controls(rt: Runtime, via: &[&str]) {
    let server = start(rt, via, Some("s3cret"));
    server.go_client("auth_ok", &with(via, &["-auth", "not-the-secret"])).assert_fail_containing("auth failed");
    server.go_client("msgpack", via).assert_fail_containing("auth failed");
    let open = start(rt, via, None);
    open.go_client("auth_fail", via).assert_fail_containing("succeeded");
}

/// Two servers; the second is closed 2 s into a 5 s run of back-to-back Failover calls:
/// every call must still succeed.
fn failover(rt: Runtime, via: &[&str]) {
    let s1 = start(rt, via, None);
    let mut s2 = start(rt, via, None);
    let closed = s2.close_after(Duration::from_secs(2));
    let ca = rpcx_interop::tls::test_tls().cert_pem.display().to_string();
    let mut args = with(via, &["-addr", s1.addr(), "-addr2", s2.addr(), "-duration", "5s"]);
    if via == WSS {
        args.extend(["-ca", ca.as_str()]);
    }
    let run = go_client("failover", &args);
    run.assert_pass();
    assert!(closed.load(Ordering::SeqCst), "server 2 was not closed during the run\n{}", run.report());
    // Both servers must have been used before the close.
    let info = run.info_lines().find(|l| l.starts_with("failover ")).unwrap_or_default().to_owned();
    assert!(info.contains(s1.addr()) && info.contains(s2.addr()), "not both servers used: {info}\n{}", run.report());
}

fn unix_heartbeat(rt: Runtime, _via: &[&str]) {
    let server = RustServer::unix_on(rt, "heartbeat", None);
    server.go_client("heartbeat", &["-duration", "1500ms"]).assert_pass();
}

fn unix_auth_fail(rt: Runtime, _via: &[&str]) {
    let server = RustServer::unix_on(rt, "auth_fail", Some("s3cret"));
    server.go_client("auth_fail", &[]).assert_pass();
}

/// Every scenario of `all` in one driver run over one unix-socket server.
fn unix_all(rt: Runtime, _via: &[&str]) {
    let server = RustServer::unix_on(rt, "all", None);
    server.go_client("all", &[]).assert_pass();
}

/// One `#[test]` per plain scenario (named like the test), run with `$run` on `$rt`
/// through `$via`.
macro_rules! scenarios {
    ($rt:expr, $run:ident, $via:expr; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            crate::$run($rt, $via, stringify!($name));
        }
    )*};
}

/// Every plain scenario of the Go driver (those its `all` runs), through `$via`.
macro_rules! every_plain_scenario {
    ($rt:expr, $via:expr) => {
        scenarios!($rt, over, $via;
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
            alias,
        );
    };
}

/// One `#[test]` per scenario with its own setup (the function of the same name),
/// through `$via`.
macro_rules! custom {
    ($rt:expr, $via:expr; $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            crate::$name($rt, $via);
        }
    )*};
}

/// Every scenario for the server runtime `$rt`, in module `$module`: over TCP at its
/// top, and the same list again through an HTTP CONNECT tunnel (`$module::http_connect`),
/// WebSocket (`$module::websocket`) and WebSocket in TLS (`$module::websocket_tls`);
/// plain scenarios over a unix socket in
/// `$module::unix`.
macro_rules! go_client_suite {
    ($module:ident, $rt:expr) => {
        mod $module {
            use super::*;

            every_plain_scenario!($rt, TCP);
            custom!($rt, TCP;
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

                every_plain_scenario!($rt, HTTP);
                custom!($rt, HTTP; heartbeat, auth_ok, auth_fail, auth_negative_controls, failover);
            }

            mod websocket {
                use super::super::*;

                every_plain_scenario!($rt, WS);
                custom!($rt, WS; heartbeat, auth_ok, auth_fail, auth_negative_controls, failover);
            }

            mod websocket_tls {
                use super::super::*;

                every_plain_scenario!($rt, WSS);
                custom!($rt, WSS; heartbeat, auth_ok, auth_fail, auth_negative_controls, failover);
            }

            mod unix {
                use super::super::*;

                scenarios!($rt, over_unix, TCP; msgpack, protobuf, gzip_large, push, big);
            }
        }
    };
}

go_client_suite!(tokio_server, Runtime::Tokio);
go_client_suite!(std_server, Runtime::Std);
go_client_suite!(smol_server, Runtime::Smol);
