//! The server settings every runtime shares, and the builder methods that set them.

use crate::conn::ServerConfig;
use crate::registry::RegistrySettings;
use std::time::Duration;

/// How long the end of a connection may wait to flush its transport (a TLS
/// `close_notify`) when no write timeout is set; see [`ServerSettings::close_linger`].
pub const DEFAULT_CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Server settings common to every runtime (each runtime's `ServerOptions` holds them
/// in a `settings` field, and its `Server` has a builder method for each, from
/// [`server_settings_setters!`](crate::server_settings_setters)). Defaults: no
/// read/write timeout (as Go), a 30 s frame timeout, 32 MiB frames, a 512 MiB
/// server-wide memory budget, 10 000 connections, 1024 requests in flight per
/// connection, TCP keepalive 3 min (Go's server default), 10 s TLS handshake timeout,
/// and [`ServerConfig`]'s defaults for the rest.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Every setting of a connection's machine, one place each: the read (idle)
    /// timeout, requests in flight, unsent bytes, and the decoder's and encoder's
    /// limits (frame length, decompressed length, metadata pairs, the strict
    /// `payloadLen` check) and compressors.
    pub connection: ServerConfig,
    /// Close a connection whose writes make no progress for this long.
    pub write_timeout: Option<Duration>,
    /// Most connections served at once; a connection accepted past it is closed at
    /// once (see [`Dispatcher::session`](super::Dispatcher::session)).
    pub max_connections: usize,
    /// TLS handshake timeout.
    pub tls_handshake_timeout: Duration,
    /// TCP keepalive period for accepted connections.
    pub tcp_keepalive: Option<Duration>,
    /// Where the server registers itself, and under which address (see
    /// [`registry`](crate::registry) for the life cycle every runtime follows).
    pub registry: RegistrySettings,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            connection: ServerConfig::default(),
            write_timeout: None,
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            tcp_keepalive: Some(Duration::from_secs(180)),
            registry: RegistrySettings::default(),
        }
    }
}

impl ServerSettings {
    /// The longest the end of a connection waits for its transport to take the last
    /// bytes (the TLS `close_notify` and whatever the TLS layer still buffers): the
    /// write timeout, or [`DEFAULT_CLOSE_LINGER`] (1 s) when none is set. Every server
    /// runtime bounds a connection's close by this, so a peer that stopped reading
    /// cannot hold a shutdown longer.
    pub fn close_linger(&self) -> Duration {
        self.write_timeout.unwrap_or(DEFAULT_CLOSE_LINGER)
    }
}

/// Builder methods for every [`ServerSettings`] field, for a type whose settings sit at
/// the field path given (`server_settings_setters!(opts.settings)`): `read_timeout`
/// (and its alias `idle_timeout`), `frame_timeout`, `memory_budget`,
/// `max_concurrent_inflations`, `memory_grace`, `write_timeout`, `max_message_len`, `max_decompressed_len`, `max_metadata_pairs`,
/// `strict_payload_len`, `max_in_flight`, `max_unsent_bytes`, `max_connections`,
/// `tls_handshake_timeout`, `tcp_keepalive`, `compressor`, `disable_http_gateway`,
/// `disable_jsonrpc`, `http_cors`, `settings` and `connection`. Every
/// runtime's `Server` uses it, so they offer the same knobs with the same meaning.
#[macro_export]
macro_rules! server_settings_setters {
    ($($path:ident).+) => {
        /// Register the server's services with `registrar` after binding, keep them
        /// registered while it runs, and unregister before a graceful shutdown drains
        /// (see `rpcx_core::registry`).
        pub fn registrar(mut self, registrar: impl $crate::registry::Registrar + 'static) -> Self {
            self.$($path).+.registry.registrar = Some(::std::sync::Arc::new(registrar));
            self
        }

        /// The address to publish in the registry: `tcp@host:port`, or a bare host
        /// combined with the bound port. Required when bound to `0.0.0.0` / `[::]`.
        pub fn advertise_address(mut self, address: impl Into<String>) -> Self {
            self.$($path).+.registry.advertise_address = Some(address.into());
            self
        }

        /// Write `calls` and `connections` (mean rates per second since start, `%.2f`)
        /// into the registry nodes on every refresh, as Go's register plugins do when
        /// their `Metrics` is set (see `rpcx_core::registry`).
        pub fn publish_rates(mut self, on: bool) -> Self {
            self.$($path).+.registry.publish_rates = on;
            self
        }

        /// Close a connection when no request arrives for this long (Go's `ReadTimeout`).
        pub fn read_timeout(mut self, d: ::std::time::Duration) -> Self {
            self.$($path).+.connection.read_timeout = Some(d);
            self
        }

        /// The idle-connection timeout: the same setting as
        /// [`read_timeout`](Self::read_timeout) (a connection that sends no frame for
        /// this long is closed; heartbeats count as frames).
        pub fn idle_timeout(self, d: ::std::time::Duration) -> Self {
            self.read_timeout(d)
        }

        /// Close a connection when a frame that has started is not complete this long
        /// after (default 30 s; `None`: never). Slowloris peers end here.
        pub fn frame_timeout(mut self, d: Option<::std::time::Duration>) -> Self {
            self.$($path).+.connection.frame_timeout = d;
            self
        }

        /// The server-wide memory budget in bytes (default 512 MiB; never below twice
        /// the frame limit): see `rpcx_core::conn::MemoryBudget` for what counts and
        /// the policy when it is exceeded.
        pub fn memory_budget(mut self, bytes: usize) -> Self {
            let b = &self.$($path).+.connection.budget;
            let (n, g) = (b.max_inflations(), b.grace());
            self.$($path).+.connection.budget =
                ::std::sync::Arc::new($crate::conn::MemoryBudget::new(bytes, n, g));
            self
        }

        /// Most request payloads decompressed at once, server-wide (default 4).
        pub fn max_concurrent_inflations(mut self, n: usize) -> Self {
            let b = &self.$($path).+.connection.budget;
            let (l, g) = (b.limit(), b.grace());
            self.$($path).+.connection.budget =
                ::std::sync::Arc::new($crate::conn::MemoryBudget::new(l, n, g));
            self
        }

        /// How long a peer that does not read may hold queued output while the server
        /// is over its memory budget before it is closed (default 10 s).
        pub fn memory_grace(mut self, d: ::std::time::Duration) -> Self {
            let b = &self.$($path).+.connection.budget;
            let (l, n) = (b.limit(), b.max_inflations());
            self.$($path).+.connection.budget =
                ::std::sync::Arc::new($crate::conn::MemoryBudget::new(l, n, d));
            self
        }

        /// Close a connection whose writes make no progress for this long (also the
        /// bound on flushing a closing connection: `ServerSettings::close_linger`).
        pub fn write_timeout(mut self, d: ::std::time::Duration) -> Self {
            self.$($path).+.write_timeout = Some(d);
            self
        }

        /// Largest frame accepted or sent (`totalLen`), and largest decompressed payload.
        pub fn max_message_len(mut self, n: usize) -> Self {
            let c = &mut self.$($path).+.connection;
            c.decoder.max_message_len = n;
            c.decoder.max_decompressed_len = n;
            c.encoder.max_message_len = n;
            self
        }

        /// Largest decompressed request payload (after [`max_message_len`](Self::max_message_len),
        /// which sets it too).
        pub fn max_decompressed_len(mut self, n: usize) -> Self {
            self.$($path).+.connection.decoder.max_decompressed_len = n;
            self
        }

        /// Most metadata pairs in a request; a frame with more closes the connection.
        pub fn max_metadata_pairs(mut self, n: usize) -> Self {
            self.$($path).+.connection.decoder.max_metadata_pairs = n;
            self
        }

        /// Reject frames whose `payloadLen` disagrees with the frame (the default).
        /// `false` is the lenient switch: accept what Go accepts.
        pub fn strict_payload_len(mut self, strict: bool) -> Self {
            self.$($path).+.connection.decoder.strict_payload_len = strict;
            self
        }

        /// Most requests in flight per connection before reading pauses.
        pub fn max_in_flight(mut self, n: usize) -> Self {
            self.$($path).+.connection.max_in_flight = n.max(1);
            self
        }

        /// Most encoded bytes queued per connection before reading pauses and pushes
        /// are refused.
        pub fn max_unsent_bytes(mut self, n: usize) -> Self {
            self.$($path).+.connection.max_unsent_bytes = n.max(1);
            self
        }

        /// Most connections served at once; past it a new connection is closed at once.
        pub fn max_connections(mut self, n: usize) -> Self {
            self.$($path).+.max_connections = n.max(1);
            self
        }

        /// TLS handshake timeout.
        pub fn tls_handshake_timeout(mut self, d: ::std::time::Duration) -> Self {
            self.$($path).+.tls_handshake_timeout = d;
            self
        }

        /// TCP keepalive period for accepted connections (`None`: off).
        pub fn tcp_keepalive(mut self, period: Option<::std::time::Duration>) -> Self {
            self.$($path).+.tcp_keepalive = period;
            self
        }

        /// Register a compressor for requests and responses of compress type `ty`.
        pub fn compressor(
            mut self,
            ty: $crate::wire::CompressType,
            c: ::std::sync::Arc<dyn $crate::compress::Compressor>,
        ) -> Self {
            let conn = &mut self.$($path).+.connection;
            conn.decoder.compressors.register(ty, c.clone());
            conn.encoder.compressors.register(ty, c);
            self
        }

        /// Turn the X-RPCX HTTP gateway on this port off (Go's `DisableHTTPGateway`).
        /// On by default: see `rpcx_core::http`.
        pub fn disable_http_gateway(mut self) -> Self {
            self.$($path).+.connection.http.gateway = false;
            self
        }

        /// Turn JSON-RPC 2.0 on this port off (Go's `DisableJSONRPC`). On by default.
        pub fn disable_jsonrpc(mut self) -> Self {
            self.$($path).+.connection.http.jsonrpc = false;
            self
        }

        /// Answer CORS requests from any origin on the HTTP gateway and JSON-RPC (Go's
        /// `SetCORS(AllowAllCORSOptions())`). Off by default.
        pub fn http_cors(mut self, on: bool) -> Self {
            self.$($path).+.connection.http.cors = on;
            self
        }

        /// Replace every setting at once.
        pub fn settings(mut self, settings: $crate::service::ServerSettings) -> Self {
            self.$($path).+ = settings;
            self
        }

        /// Replace every setting of the connections' machines at once.
        pub fn connection(mut self, config: $crate::conn::ServerConfig) -> Self {
            self.$($path).+.connection = config;
            self
        }
    };
}
