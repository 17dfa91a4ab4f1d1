//! HTTP on the rpcx port (gateway, JSON-RPC, CONNECT, WebSocket upgrade, CORS, hostile
//! HTTP), against every server runtime.

rpcx_conformance::on_every_server!(
    http_scenarios;
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
