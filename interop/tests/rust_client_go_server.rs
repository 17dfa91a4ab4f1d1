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

/// Every client check for the client runtime `$rt`, in module `$module`.
macro_rules! client_suite {
    ($module:ident, $rt:expr) => {
        mod $module {
            use super::*;

            checks!(client $rt, GoServer::tcp(None);
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

            checks!(client $rt, GoServer::tcp(Some(TOKEN)); auth_ok, auth_fail);

            /// Through Go's `Serve("http", ..)`: rpcx in an HTTP CONNECT tunnel.
            mod http_connect {
                use super::super::*;

                checks!(client $rt, GoServer::http(None); msgpack, json, gzip_large, push, heartbeat, big, concurrent);
                checks!(client $rt, GoServer::http(Some(TOKEN)); auth_ok, auth_fail);
            }

            /// Through Go's `Serve("ws", ..)`: rpcx over WebSocket (Go's x/net server).
            mod websocket {
                use super::super::*;

                checks!(client $rt, GoServer::ws(None); msgpack, json, gzip_large, push, heartbeat, big, concurrent);
                checks!(client $rt, GoServer::ws(Some(TOKEN)); auth_ok, auth_fail);
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
