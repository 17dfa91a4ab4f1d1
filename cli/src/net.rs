//! Addresses and connecting: the address forms the CLI takes, TLS settings.

use crate::{ConnectArgs, Failure};
use rpcx_tokio::core::addr::ServerAddr;
use rpcx_tokio::tls::TlsClient;
use rpcx_tokio::{Client, ClientOptions};
use std::sync::Arc;

/// Check an address (`tcp@host:port`, `host:port`, `http@host:port` (CONNECT),
/// `ws@host:port`, `wss@host:port`, `unix@/path`) before dialing, so a typo is a usage
/// error rather than a connection failure.
pub(crate) fn check_addr(addr: &str) -> Result<ServerAddr, Failure> {
    let parsed: ServerAddr = addr.parse().map_err(|e| {
        Failure::usage(format!(
            "bad address {addr:?}: {e} (use tcp@host:port, host:port, http@, ws@ or wss@host:port, or unix@/path)"
        ))
    })?;
    if let Some(hp) = host_port(&parsed) {
        let port_ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(Failure::usage(format!("bad address {addr:?}: expected host:port")));
        }
    }
    Ok(parsed)
}

/// The `host:port` of a network address (TCP, or HTTP CONNECT or WebSocket over TCP).
fn host_port(addr: &ServerAddr) -> Option<&str> {
    match addr {
        ServerAddr::Tcp(hp) | ServerAddr::Http(hp) | ServerAddr::Ws(hp) | ServerAddr::Wss(hp) => Some(hp),
        _ => None,
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
fn host_of(hp: &str) -> &str {
    let host = hp.rsplit_once(':').map_or(hp, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Client options for the connect flags (TLS, dial timeout).
pub(crate) fn client_options(addr: &ServerAddr, c: &ConnectArgs) -> Result<ClientOptions, Failure> {
    let mut opts = ClientOptions { connect_timeout: c.connect_timeout, ..ClientOptions::default() };
    // `wss@` is WebSocket over TLS: it implies --tls.
    if c.tls || matches!(addr, ServerAddr::Wss(_)) {
        let Some(hp) = host_port(addr) else {
            return Err(Failure::usage("--tls needs a tcp, http, ws or wss address"));
        };
        let server_name = c.server_name.clone().unwrap_or_else(|| host_of(hp).to_owned());
        opts.tls = Some(TlsClient { config: tls_config(c)?, server_name });
    }
    Ok(opts)
}

/// Connect, reporting failures as the CLI does.
pub(crate) async fn connect(addr: &str, c: &ConnectArgs) -> Result<Client, Failure> {
    let parsed = check_addr(addr)?;
    let opts = client_options(&parsed, c)?;
    Client::connect(addr, opts).await.map_err(|e| Failure::failed(format!("{addr}: {e}")))
}

fn tls_config(c: &ConnectArgs) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let provider = rpcx_tokio::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::failed(format!("tls: {e}")))?;
    let config = if c.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))).with_no_client_auth()
    } else {
        let Some(ca) = &c.ca else {
            return Err(Failure::usage("--tls needs --ca PEM (the authorities to trust) or --insecure"));
        };
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let certs =
            CertificateDer::pem_file_iter(ca).map_err(|e| Failure::usage(format!("--ca {}: {e}", ca.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| Failure::usage(format!("--ca {}: {e}", ca.display())))?;
            roots.add(cert).map_err(|e| Failure::usage(format!("--ca {}: {e}", ca.display())))?;
        }
        if roots.is_empty() {
            return Err(Failure::usage(format!("--ca {}: no certificate found", ca.display())));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `--insecure`: accepts any certificate, but still checks the handshake signatures.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(check_addr("tcp@127.0.0.1:8972").is_ok());
        assert!(check_addr("127.0.0.1:8972").is_ok());
        assert!(check_addr("unix@/tmp/x.sock").is_ok());
        assert!(matches!(check_addr("127.0.0.1"), Err(Failure::Usage(_))));
        assert!(matches!(check_addr("tcp@host:notaport"), Err(Failure::Usage(_))));
        assert!(matches!(check_addr("bogus@x"), Err(Failure::Usage(_))));
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("localhost:80"), "localhost");
    }
}
