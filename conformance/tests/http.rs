//! HTTP on the rpcx port (gateway and JSON-RPC), against every server runtime.

use rpcx_conformance::http_scenarios as sc;
use rpcx_conformance::runtimes::{Smol, Std, Tokio};

macro_rules! on_every_server {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use super::*;
                #[test]
                fn tokio() {
                    sc::$scenario(&Tokio);
                }
                #[test]
                fn smol() {
                    sc::$scenario(&Smol);
                }
                #[test]
                fn std() {
                    sc::$scenario(&Std);
                }
            }
        )*
    };
}

on_every_server!(
    gateway_calls_like_go,
    gateway_errors_like_go,
    gateway_auth_is_401,
    jsonrpc_like_go,
    hostile_http_is_bounded,
    http_can_be_turned_off,
    connect_keeps_pipelined_bytes,
    cors_when_turned_on,
    a_thousand_idle_keep_alive_connections,
);
