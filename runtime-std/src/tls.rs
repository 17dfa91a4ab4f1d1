//! TLS settings (rustls). The thread that drives the connection runs the rustls state machine itself
//! (`read_tls`/`process_new_packets`/`write_tls`), so the reader thread only moves raw
//! bytes and no lock is shared between the two directions.

use std::sync::Arc;

/// Client TLS: a rustls config and the name to verify the server certificate against.
#[derive(Clone)]
pub struct TlsClient {
    /// The rustls client configuration (roots, client auth, ALPN...).
    pub config: Arc<rustls::ClientConfig>,
    /// The server name (DNS name or IP) expected in its certificate.
    pub server_name: String,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// The rustls crypto provider this crate is built with (ring), for building configs:
/// `rustls::ClientConfig::builder_with_provider(rpcx_std::tls::provider())`.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
