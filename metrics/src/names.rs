//! The metric and label names these hooks record, as constants.

use metrics::Unit;
use rpcx_core::service::ServerTotals;

/// Label `rpc.system`, always [`RPCX`].
pub const RPC_SYSTEM: &str = "rpc.system";
/// The value of [`RPC_SYSTEM`].
pub const RPCX: &str = "rpcx";
/// Label `rpc.service`: the service path.
pub const RPC_SERVICE: &str = "rpc.service";
/// Label `rpc.method`: the service method.
pub const RPC_METHOD: &str = "rpc.method";
/// Label `otel.status_code` on response metrics: [`STATUS_OK`] or [`STATUS_ERROR`]
/// (rpcx-plugins' `semconv.OTelStatusCodeOk` / `OTelStatusCodeError`).
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// [`OTEL_STATUS_CODE`] of a success.
pub const STATUS_OK: &str = "OK";
/// [`OTEL_STATUS_CODE`] of a failure.
pub const STATUS_ERROR: &str = "ERROR";
/// Service and method of the names past [`MetricsHooks::max_series`](crate::MetricsHooks::max_series).
pub const OTHER: &str = "_other";

/// Server: from the request read to its response queued, in milliseconds (histogram).
pub const SERVER_DURATION: &str = "rpc.server.duration";
/// Server: request payload bytes (histogram).
pub const SERVER_REQUEST_SIZE: &str = "rpc.server.request.size";
/// Server: response payload bytes (histogram).
pub const SERVER_RESPONSE_SIZE: &str = "rpc.server.response.size";
/// Server: requests (counter).
pub const SERVER_REQUESTS_PER_RPC: &str = "rpc.server.requests_per_rpc";
/// Server: responses (counter).
pub const SERVER_RESPONSES_PER_RPC: &str = "rpc.server.responses_per_rpc";
/// Client: call latency, in milliseconds (histogram).
pub const CLIENT_DURATION: &str = "rpc.client.duration";
/// Client: request payload bytes (histogram).
pub const CLIENT_REQUEST_SIZE: &str = "rpc.client.request.size";
/// Client: response payload bytes (histogram).
pub const CLIENT_RESPONSE_SIZE: &str = "rpc.client.response.size";
/// Client: calls (counter).
pub const CLIENT_REQUESTS_PER_RPC: &str = "rpc.client.requests_per_rpc";
/// Client: responses received (counter).
pub const CLIENT_RESPONSES_PER_RPC: &str = "rpc.client.responses_per_rpc";

/// Go MetricsPlugin: counter of registered services.
pub const GO_SERVICE_COUNTER: &str = "serviceCounter";
/// Go MetricsPlugin: meter of accepted connections.
pub const GO_CLIENT_METER: &str = "clientMeter";
/// Go MetricsPlugin: `service.<sp>.<sm>.Read_Qps`, meter of requests read.
pub const GO_READ_QPS: &str = "Read_Qps";
/// Go MetricsPlugin: `service.<sp>.<sm>.Write_Qps`, meter of responses written.
pub const GO_WRITE_QPS: &str = "Write_Qps";
/// Go MetricsPlugin: `service.<sp>.<sm>.CallTime`, histogram of nanoseconds.
pub const GO_CALL_TIME: &str = "CallTime";

/// The gauges of [`ServerTotalsGauges`](crate::ServerTotalsGauges): name, unit, help.
pub const TOTALS: &[(&str, Unit, &str)] = &[
    ("rpcx.server.connections_accepted", Unit::Count, "Connections accepted (the conn_accepted hooks passed)"),
    ("rpcx.server.connections_refused", Unit::Count, "Connections refused by a conn_accepted hook"),
    ("rpcx.server.connections_over_cap", Unit::Count, "Connections closed at once because max_connections were served"),
    ("rpcx.server.connections_open", Unit::Count, "Connections being served now"),
    ("rpcx.server.requests", Unit::Count, "Requests handed to handlers"),
    ("rpcx.server.responses", Unit::Count, "Responses queued (oneway requests excluded)"),
    ("rpcx.server.heartbeats", Unit::Count, "Heartbeats echoed"),
    ("rpcx.server.pushes", Unit::Count, "Server pushes queued"),
    ("rpcx.server.pushes_dropped", Unit::Count, "Server pushes the connection refused"),
    ("rpcx.server.frames_in", Unit::Count, "Frames decoded"),
    ("rpcx.server.frames_out", Unit::Count, "Frames handed out for writing"),
    ("rpcx.server.encode_failures", Unit::Count, "Responses that could not be encoded"),
    ("rpcx.server.protocol_errors", Unit::Count, "Connections closed because the peer broke the protocol"),
    ("rpcx.server.memory_used", Unit::Bytes, "Bytes charged to the server's memory budget now"),
    ("rpcx.server.memory_peak", Unit::Bytes, "The most bytes charged to the memory budget at once"),
];

const _: () = assert!(TOTALS.len() == 15);

/// Each of [`TOTALS`] with its value in `t`, in the same order.
pub fn totals(t: &ServerTotals) -> [(&'static str, u64); 15] {
    let v = [
        t.connections_accepted,
        t.connections_refused,
        t.connections_over_cap,
        t.connections_open,
        t.requests,
        t.responses,
        t.heartbeats,
        t.pushes,
        t.pushes_dropped,
        t.frames_in,
        t.frames_out,
        t.encode_failures,
        t.protocol_errors,
        t.memory_used,
        t.memory_peak,
    ];
    std::array::from_fn(|i| (TOTALS[i].0, v[i]))
}
