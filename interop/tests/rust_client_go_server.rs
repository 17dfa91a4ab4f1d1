//! The Rust client of every runtime against the real Go rpcx server
//! (`interop/go/cmd/server`). Each test starts its own Go server process (killed on
//! drop) on `127.0.0.1:0` or a fresh unix socket. The checks live in `common/mod.rs`,
//! written once against the runtime-neutral client facade, and run unchanged against
//! the Rust server in `rust_client_rust_server.rs`. Tests are named
//! `<client runtime>_client::<check>` (`tokio_client::json`, `std_client::json`,
//! `smol_client::json`, ...); the raw-frame checks, which involve no client runtime,
//! are in `raw::`.

mod common;

use common::{TOKEN, checks};
use rpcx_interop::{GoServer, Runtime};

/// Every client check, for the client runtime `$rt` against the Go server `$server`
/// started with `$auth` (`None`, or `Some(TOKEN)` for the auth checks).
macro_rules! every_check {
    ($rt:expr, $server:ident) => {
        checks!(client $rt, GoServer::$server(None);
            json,
            msgpack,
            protobuf,
            raw,
            gzip_small,
            gzip_large,
            metadata,
            error,
            error_reply_payload,
            unknown_service,
            unknown_method,
            oneway,
            heartbeat,
            deadline,
            push,
            push_before_reply,
            big,
            concurrent,
            slow_deadline,
            deadline_negative,
            unknown_codec_text,
        );

        checks!(client $rt, GoServer::$server(Some(TOKEN)); auth_ok, auth_fail);
    };
}

/// Every client check for the client runtime `$rt`, in module `$module`: over TCP at
/// its top, and the same list through Go's `Serve("http", ..)` (rpcx in an HTTP CONNECT
/// tunnel, `$module::http_connect`) and `Serve("ws", ..)` (rpcx over WebSocket, Go's
/// x/net server, `$module::websocket`) and `Serve("wss", ..)` (the same in TLS,
/// `$module::websocket_tls`).
macro_rules! client_suite {
    ($module:ident, $rt:expr) => {
        mod $module {
            use super::*;

            every_check!($rt, tcp);

            mod http_connect {
                use super::super::*;

                every_check!($rt, http);
            }

            mod websocket {
                use super::super::*;

                every_check!($rt, ws);
            }

            mod websocket_tls {
                use super::super::*;

                every_check!($rt, wss);
            }

            mod unix {
                use super::super::*;

                checks!(client $rt, GoServer::unix("rc", None); msgpack, gzip_large, push, big);
                checks!(client $rt, GoServer::unix("rc", Some(TOKEN)); auth_fail);
            }
        }
    };
}

client_suite!(tokio_client, Runtime::Tokio);
client_suite!(std_client, Runtime::Std);
client_suite!(smol_client, Runtime::Smol);

mod raw {
    use super::*;

    checks!(raw GoServer::tcp(None); raw_heartbeat_echo, raw_header_echo, raw_oneway_silent, raw_push_order);
    checks!(raw GoServer::tcp(Some(TOKEN)); auth_stops_reading);

    mod unix {
        use super::super::*;

        checks!(raw GoServer::unix("hb_echo", None); raw_heartbeat_echo);
    }
}
