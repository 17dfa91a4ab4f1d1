//! The Rust client (`rpcx_tokio::Client`) against the real Go rpcx server
//! (`interop/go/cmd/server`). Each test starts its own Go server process (killed on
//! drop) on `127.0.0.1:0` or a fresh unix socket; the checks live in `common/mod.rs`
//! and run unchanged against the Rust server in `rust_client_rust_server.rs`.

mod common;

use common::{LIMIT, TOKEN};
use rpcx_interop::{GoServer, block_on_timeout};

macro_rules! tcp_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let server = GoServer::tcp(None);
            block_on_timeout(LIMIT, common::$name(&server.rpcx_addr()));
        }
    )*};
}

tcp_tests!(
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
    raw_heartbeat_echo,
    raw_header_echo,
    raw_oneway_silent,
);

#[test]
fn auth_ok() {
    let server = GoServer::tcp(Some(TOKEN));
    block_on_timeout(LIMIT, common::auth_ok(&server.rpcx_addr()));
}

#[test]
fn auth_fail() {
    let server = GoServer::tcp(Some(TOKEN));
    block_on_timeout(LIMIT, common::auth_fail(&server.rpcx_addr()));
}

#[test]
fn unix_msgpack() {
    let server = GoServer::unix("msgpack", None);
    block_on_timeout(LIMIT, common::msgpack(&server.rpcx_addr()));
}

#[test]
fn unix_gzip_large() {
    let server = GoServer::unix("gzip_large", None);
    block_on_timeout(LIMIT, common::gzip_large(&server.rpcx_addr()));
}

#[test]
fn unix_push() {
    let server = GoServer::unix("push", None);
    block_on_timeout(LIMIT, common::push(&server.rpcx_addr()));
}

#[test]
fn unix_big() {
    let server = GoServer::unix("big", None);
    block_on_timeout(LIMIT, common::big(&server.rpcx_addr()));
}

#[test]
fn unix_auth_fail() {
    let server = GoServer::unix("auth_fail", Some(TOKEN));
    block_on_timeout(LIMIT, common::auth_fail(&server.rpcx_addr()));
}

#[test]
fn auth_stops_reading() {
    let server = GoServer::tcp(Some(TOKEN));
    block_on_timeout(LIMIT, common::auth_stops_reading(&server.rpcx_addr()));
}

#[test]
fn deadline_negative() {
    let server = GoServer::tcp(None);
    block_on_timeout(LIMIT, common::deadline_negative(&server.rpcx_addr()));
}

#[test]
fn unknown_codec_text() {
    let server = GoServer::tcp(None);
    block_on_timeout(LIMIT, common::unknown_codec_text(&server.rpcx_addr()));
}

#[test]
fn unix_raw_heartbeat_echo() {
    let server = GoServer::unix("hb_echo", None);
    block_on_timeout(LIMIT, common::raw_heartbeat_echo(&server.rpcx_addr()));
}
