//! One self-signed certificate per test process for the `wss@` interop tests, valid
//! for `localhost` and `127.0.0.1`: the Rust servers and clients get rustls configs,
//! the Go server and driver get the PEM files (`-cert`/`-key`, `-ca`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The process's test certificate, its key, and the configs built on them.
pub struct TestTls {
    /// Server config with the certificate (Rust servers).
    pub server: Arc<rustls::ServerConfig>,
    /// Client config trusting only the certificate (Rust clients).
    pub client: Arc<rustls::ClientConfig>,
    /// The certificate, PEM (the Go server's `-cert`, the Go driver's `-ca`).
    pub cert_pem: PathBuf,
    /// The private key, PEM (the Go server's `-key`).
    pub key_pem: PathBuf,
}

/// The name Rust clients verify the certificate against.
pub const SERVER_NAME: &str = "localhost";

/// The process's [`TestTls`], made on first use.
pub fn test_tls() -> &'static TestTls {
    static TLS: OnceLock<TestTls> = OnceLock::new();
    TLS.get_or_init(make)
}

fn make() -> TestTls {
    let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned(), "127.0.0.1".to_owned()])
        .expect("generate the test certificate");
    let dir = std::env::temp_dir().join(format!("rpcx-interop-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the certificate dir");
    let cert_pem = dir.join("cert.pem");
    let key_pem = dir.join("key.pem");
    std::fs::write(&cert_pem, cert.cert.pem()).expect("write cert.pem");
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).expect("write key.pem");

    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TestTls { server: Arc::new(server), client: Arc::new(client), cert_pem, key_pem }
}
