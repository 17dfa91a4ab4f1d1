//! HTTP on the rpcx port, as Go rpcx serves it: the X-RPCX gateway and JSON-RPC 2.0,
//! without IO.
//!
//! A [`ServerConnection`](crate::conn::ServerConnection) classifies its connection by
//! the first bytes, as Go's `cmux` does: `0x08` (the rpcx magic) is rpcx; an HTTP/1
//! request line is HTTP; anything else goes to the rpcx decoder, which closes the
//! connection as before. On an HTTP connection the first request decides, as in Go:
//! `X-JSONRPC-2.0: true` makes it JSON-RPC, anything else the gateway. Every runtime
//! gets this from the machine, so the behaviour is one: the runtimes only move bytes.
//!
//! # The gateway
//!
//! ```text
//! curl -s -X POST http://127.0.0.1:8972/ \
//!   -H 'X-RPCX-ServicePath: Arith' -H 'X-RPCX-ServiceMethod: Mul' \
//!   -H 'X-RPCX-SerializeType: 1' -d '{"A":6,"B":7}'
//! {"C":42}
//! ```
//!
//! Request headers (case-insensitive): `X-RPCX-ServicePath` (else the URL path without
//! its leading `/`), `X-RPCX-ServiceMethod` and `X-RPCX-SerializeType` (required),
//! `X-RPCX-MessageID` (the seq), `X-RPCX-Oneway` and `X-RPCX-Heartbeat` (any non-empty
//! value sets the bit), `X-RPCX-Meta` (a URL query: request metadata),
//! `Authorization` (metadata `__AUTH`); the body is the payload. Responses, as Go
//! writes them (header names canonicalised, `X-Rpcx-Messageid`): 200 with the echoed
//! `X-Rpcx-Version`, `X-Rpcx-Messageid`, `X-Rpcx-Servicepath`,
//! `X-Rpcx-Servicemethod`, `X-Rpcx-Serializetype` and the response metadata in
//! `X-Rpcx-Meta` (sorted URL query), the reply as the body; a missing or malformed
//! header is 200 with `X-Rpcx-Messagestatustype: Error` and `X-Rpcx-Errormessage`;
//! an auth failure 401 and a service error 500, both with those two headers and no
//! body. Only POST, GET and PUT are routed (others get 405, OPTIONS the allowed
//! methods), as Go's router does.
//!
//! Where this is stricter than Go, or says more: the body is bounded (the frame limit,
//! 413 past it; Go reads it whole), the head too ([`HttpConfig::max_head_bytes`], 431),
//! a head or body that does not complete within the frame timeout closes the
//! connection; replies name their serialization in `Content-Type`
//! (`application/json`, `application/msgpack`, `application/x-protobuf`; Go leaves it
//! to content sniffing); after an auth failure the connection is closed (as on rpcx
//! connections), with `Connection: close`; a hook that rejects a request gives the 500
//! with the error headers (Go answers `http.Error` text for its read hooks); no `Date`
//! header (the machine has no wall clock).
//!
//! # JSON-RPC 2.0
//!
//! `{"jsonrpc":"2.0","method":"Arith.Mul","params":{"A":6,"B":7},"id":1}` posted with
//! `X-JSONRPC-2.0: true` (any path) calls `Arith.Mul` with the params as its JSON
//! payload; `X-RPCX-Meta` and `Authorization` work as on the gateway. No `id` (or
//! `null`) is a notification: it runs, and the HTTP answer is an empty 200 at once.
//! Errors carry Go's codes (-32700 parse, -32601 a method without a dot, -32603
//! service, auth and hook errors). Better than Go: a call without `params` gets
//! -32602 (Go crashes), batches work (Go refuses them), the content type is
//! `Content-Type: application/json` (Go writes `Context-Type`).

pub mod connect;
pub(crate) mod front;
pub(crate) mod gateway;
pub(crate) mod h1;
pub(crate) mod jsonrpc;
pub mod ws;

/// The HTTP handshake a client does before rpcx on an `http@` (CONNECT) or `ws@` /
/// `wss@` (WebSocket upgrade) address: write [`request`](Self::request), then
/// [`feed`](Self::feed) the server's bytes (a byte at a time is simplest: nothing after
/// the answer may be taken from the stream) until it says done; then set
/// [`ClientConfig::websocket`](crate::conn::ClientConfig::websocket) to
/// [`websocket`](Self::websocket).
#[derive(Debug)]
pub struct ClientHandshake {
    request: bytes::Bytes,
    reply: Reply,
    websocket: Option<u64>,
}

#[derive(Debug)]
enum Reply {
    Connect(connect::ConnectReply),
    Upgrade(ws::UpgradeReply),
}

/// A client handshake the server refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The CONNECT was refused.
    #[error(transparent)]
    Connect(connect::ConnectError),
    /// The WebSocket upgrade was refused.
    #[error(transparent)]
    WebSocket(ws::WsError),
}

impl ClientHandshake {
    /// The handshake `addr` needs, if any: `host` is what the client dialled
    /// (`host:port`), `tls` whether TLS is under it (the WebSocket `Origin` says
    /// `https`), `seed` fresh randomness for the WebSocket key and masks
    /// ([`ws::fresh_seed`]).
    pub fn for_address(addr: &crate::addr::ServerAddr, rpc_path: &str, tls: bool, seed: u64) -> Option<Self> {
        use crate::addr::ServerAddr;
        match addr {
            ServerAddr::Http(_) => Some(Self {
                request: connect::connect_request(rpc_path),
                reply: Reply::Connect(connect::ConnectReply::new()),
                websocket: None,
            }),
            ServerAddr::Ws(host) | ServerAddr::Wss(host) => {
                let key = ws::key_from_seed(seed);
                Some(Self {
                    request: ws::upgrade_request(host, rpc_path, &key, tls),
                    reply: Reply::Upgrade(ws::UpgradeReply::new(&key)),
                    websocket: Some(seed),
                })
            }
            _ => None,
        }
    }

    /// The bytes to write first.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// Bytes from the server: `Ok(Some(n))` once the answer ended after `n` bytes of
    /// `data`; `Ok(None)`: more is needed.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, HandshakeError> {
        match &mut self.reply {
            Reply::Connect(r) => r.feed(data).map_err(HandshakeError::Connect),
            Reply::Upgrade(r) => r.feed(data).map_err(HandshakeError::WebSocket),
        }
    }

    /// The [`ClientConfig::websocket`](crate::conn::ClientConfig::websocket) seed the
    /// connection then runs with.
    pub fn websocket(&self) -> Option<u64> {
        self.websocket
    }
}

/// HTTP on the rpcx port: which protocols a server answers beside rpcx, and their
/// limits. Both are on by default, as in Go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Serve the X-RPCX HTTP gateway (Go's `DisableHTTPGateway` turns it off).
    pub gateway: bool,
    /// Serve JSON-RPC 2.0 (Go's `DisableJSONRPC` turns it off).
    pub jsonrpc: bool,
    /// Accept rpcx over an HTTP CONNECT tunnel (`http@` clients) to
    /// [`rpc_path`](Self::rpc_path), as the first request of a connection.
    pub connect: bool,
    /// Accept rpcx over WebSocket (`ws@`/`wss@` clients): an upgrade at
    /// [`rpc_path`](Self::rpc_path) as the first request of a connection.
    pub websocket: bool,
    /// The CONNECT and WebSocket path (Go's `DefaultRPCPath`, `/_rpcx_`).
    pub rpc_path: String,
    /// Largest request head (request line and headers); 431 past it. Default 64 KiB.
    pub max_head_bytes: usize,
    /// Answer CORS requests for any origin (Go's `SetCORS(AllowAllCORSOptions())`):
    /// preflights get `204` with the requested method and headers allowed, responses
    /// carry `Access-Control-Allow-Origin: *`. Off by default.
    pub cors: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            gateway: true,
            jsonrpc: true,
            connect: true,
            websocket: true,
            rpc_path: connect::DEFAULT_RPC_PATH.to_owned(),
            max_head_bytes: 64 << 10,
            cors: false,
        }
    }
}

impl HttpConfig {
    /// No HTTP at all: the connection speaks rpcx only.
    pub fn disabled() -> Self {
        Self { gateway: false, jsonrpc: false, connect: false, websocket: false, ..Self::default() }
    }

    /// Whether any HTTP protocol is served.
    pub fn enabled(&self) -> bool {
        self.gateway || self.jsonrpc || self.connect || self.websocket
    }
}

/// Why an HTTP connection was closed. The peer got the matching HTTP status first
/// (400, 404, 413, 431, 501, 505).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request head or chunked framing is malformed (400).
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// The request head is larger than [`HttpConfig::max_head_bytes`] (431).
    #[error("HTTP request head over {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// More header lines than the parser takes (431).
    #[error("more than {limit} HTTP headers")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The body is larger than the frame limit (413).
    #[error("HTTP request body over {limit} bytes")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A transfer coding other than `chunked` (501).
    #[error("unsupported HTTP transfer encoding")]
    UnsupportedTransferEncoding,
    /// Not HTTP/1.0 or HTTP/1.1 (505).
    #[error("unsupported HTTP version")]
    Version,
    /// A WebSocket handshake or frame is malformed (a bad handshake gets 400).
    #[error(transparent)]
    WebSocket(ws::WsError),
    /// The request is for a protocol this server has turned off (the gateway, when
    /// only JSON-RPC is on) (404).
    #[error("the HTTP gateway is disabled")]
    Disabled,
}

impl HttpError {
    /// The status the peer gets.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) | Self::WebSocket(_) => 400,
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => 431,
            Self::BodyTooLarge { .. } => 413,
            Self::UnsupportedTransferEncoding => 501,
            Self::Version => 505,
            Self::Disabled => 404,
        }
    }
}

/// Methods that make a connection HTTP (Go's `cmux.HTTP1Fast`, and PATCH, which gets a
/// 405 instead of a silent close).
const METHODS: [&[u8]; 9] =
    [b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"DELETE ", b"TRACE ", b"CONNECT ", b"PATCH "];

/// What the first bytes of a connection say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// More bytes are needed to tell.
    Unknown,
    /// rpcx, or garbage the rpcx decoder will refuse.
    Rpcx,
    /// An HTTP/1 request line.
    Http,
}

/// Classify a connection by its first bytes.
pub(crate) fn classify(first: &[u8]) -> Class {
    match first.first() {
        None => Class::Unknown,
        Some(&crate::wire::MAGIC) => Class::Rpcx,
        Some(_) => {
            if METHODS.iter().any(|m| first.starts_with(m)) {
                Class::Http
            } else if METHODS.iter().any(|m| m.starts_with(first)) {
                Class::Unknown
            } else {
                Class::Rpcx
            }
        }
    }
}

/// The longest prefix [`classify`] may wait on.
pub(crate) const CLASSIFY_MAX: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_first_bytes() {
        assert_eq!(classify(b""), Class::Unknown);
        assert_eq!(classify(&[0x08, 0x01]), Class::Rpcx);
        assert_eq!(classify(b"GE"), Class::Unknown);
        assert_eq!(classify(b"GET /"), Class::Http);
        assert_eq!(classify(b"OPTIONS"), Class::Unknown);
        assert_eq!(classify(b"OPTIONS *"), Class::Http);
        assert_eq!(classify(b"GETX"), Class::Rpcx);
        assert_eq!(classify(b"\x16\x03\x01"), Class::Rpcx);
        assert!(METHODS.iter().all(|m| m.len() <= CLASSIFY_MAX));
    }
}
