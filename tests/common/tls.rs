//! A test certificate authority (rcgen), certificate pairs written where a node's
//! `tls_cert_file` / `tls_key_file` can point, and TLS clients that trust only that CA.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;

/// A CA the tests trust, and nothing else.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM, and the certificate's DER to compare with
/// what a server presents.
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("payrelay test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn issue(&self, common_name: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client configuration whose only root is this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// An HTTPS client that trusts this CA only.
    pub fn https_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.pem().as_bytes()).unwrap();
        payrelay::http_client::builder()
            .tls_certs_only([ca])
            .build()
            .unwrap()
    }
}

/// A fresh folder for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("payrelay-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `pair` as `cert.pem` and `key.pem` in `dir`, each replaced in one rename (as
/// renewal tools do), and returns the node settings naming them.
pub fn install(dir: &Path, pair: &Pair) -> String {
    for (name, text) in [("cert.pem", &pair.cert_pem), ("key.pem", &pair.key_pem)] {
        let temp = dir.join(format!(".{name}.new"));
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, dir.join(name)).unwrap();
    }
    format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

/// A TLS connection to `addr` that verifies the server against `ca` as `127.0.0.1`.
pub async fn connect(addr: SocketAddr, ca: &TestCa) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config());
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap().to_owned(), tcp)
        .await
}

/// The leaf certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, connection) = stream.get_ref();
    let chain: &[CertificateDer<'_>] = connection.peer_certificates().unwrap();
    chain[0].to_vec()
}

/// A `wss://` WebSocket to `path` on `addr`, trusting `ca`.
pub async fn wss(
    addr: SocketAddr,
    ca: &TestCa,
    path: &str,
) -> WebSocketStream<TlsStream<TcpStream>> {
    let stream = connect(addr, ca).await.expect("TLS handshake");
    let url = format!("wss://127.0.0.1:{}{path}", addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket upgrade over TLS");
    ws
}
