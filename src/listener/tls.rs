//! TLS on the node's own port, with a certificate pair that is replaced without a restart.
//!
//! rustls with `ring`, as the outgoing client ([`crate::http_client`]), TLS 1.2 and 1.3,
//! ALPN `http/1.1` (the node speaks nothing else). The pair comes from `tls_cert_file`
//! and `tls_key_file`.
//!
//! Why reload: certificates are renewed every few weeks by tools that rewrite the files
//! (certbot, cert-manager, a secrets mount), and a restart would drop every open socket.
//! Each new handshake asks [`CurrentPair`] for the pair of the moment; an established
//! connection keeps the session it negotiated, so nothing open is touched. The files are
//! read again every `tls_reload_interval_secs` and at once on SIGHUP; a pair replaces the
//! old one only if it parses and its key is the certificate's, so a renewal caught half
//! written (certificate replaced, key not yet) keeps the old pair until both are in
//! place. Nothing read from the key file ever reaches a log or an error message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// Where the pair is read from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was read last time.
    Unchanged,
    /// A new pair is served from now on; its leaf's SHA-256 fingerprint.
    Replaced(String),
    /// The files could not be used; the previous pair is still served.
    Refused(String),
}

/// The pair new handshakes get.
#[derive(Debug)]
struct CurrentPair(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentPair {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// The files' contents as last read, and the last refusal reported for them.
#[derive(Default)]
struct LastRead {
    files: Option<(Vec<u8>, Vec<u8>)>,
    refusal: Option<String>,
}

pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentPair>,
    acceptor: TlsAcceptor,
    last_read: Mutex<LastRead>,
}

impl Tls {
    /// Reads the pair and builds the acceptor; any problem stops start-up.
    pub fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let contents = read_files(&files).map_err(anyhow::Error::msg)?;
        let pair = parse_pair(&files, &contents, &provider).map_err(anyhow::Error::msg)?;
        tracing::info!(
            cert = %files.cert.display(),
            sha256 = %fingerprint(&pair),
            "TLS certificate loaded"
        );
        let current = Arc::new(CurrentPair(RwLock::new(Arc::new(pair))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            files,
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            last_read: Mutex::new(LastRead {
                files: Some(contents),
                refusal: None,
            }),
        })
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// The SHA-256 fingerprint of the leaf certificate served now.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current.0.read())
    }

    /// Reads the files again and serves their pair if they changed and hold a valid one.
    /// A refusal is reported once per contents of the files, or again when `force`d.
    pub fn reload(&self, force: bool) -> Reload {
        let mut last = self.last_read.lock();
        let outcome = match read_files(&self.files) {
            Err(e) => Reload::Refused(e),
            Ok(contents) if last.files.as_ref() == Some(&contents) => {
                return match (&last.refusal, force) {
                    (Some(e), true) => Reload::Refused(e.clone()),
                    _ => Reload::Unchanged,
                };
            }
            Ok(contents) => {
                let parsed = parse_pair(&self.files, &contents, &self.provider);
                last.files = Some(contents);
                match parsed {
                    Ok(pair) => {
                        let print = fingerprint(&pair);
                        *self.current.0.write() = Arc::new(pair);
                        Reload::Replaced(print)
                    }
                    Err(e) => Reload::Refused(e),
                }
            }
        };
        if let Reload::Refused(e) = &outcome {
            if last.refusal.as_ref() == Some(e) && !force {
                return Reload::Unchanged;
            }
            last.refusal = Some(e.clone());
        } else {
            last.refusal = None;
        }
        outcome
    }

    /// The task that keeps the pair fresh. SIGHUP is taken over here, at once, so that a
    /// SIGHUP sent as soon as the node says it listens reloads instead of killing it.
    pub fn reloader(self: &Arc<Self>, interval: Duration) -> Reloader {
        Reloader {
            tls: self.clone(),
            interval,
            hangups: hangups(),
        }
    }
}

/// Reloads every `interval` and on SIGHUP, logging and counting what changed.
pub struct Reloader {
    tls: Arc<Tls>,
    interval: Duration,
    hangups: Hangups,
}

impl Reloader {
    /// Runs until aborted.
    pub async fn run(self) {
        let Reloader {
            tls,
            interval,
            mut hangups,
        } = self;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let asked = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = next_hangup(&mut hangups) => true,
            };
            match tls.reload(asked) {
                Reload::Unchanged if asked => {
                    tracing::info!("SIGHUP: the TLS certificate files are unchanged");
                }
                Reload::Unchanged => {}
                Reload::Replaced(sha256) => {
                    metrics::counter!("payrelay_tls_reloads_total", "result" => "replaced")
                        .increment(1);
                    tracing::info!(
                        cert = %tls.files.cert.display(),
                        %sha256,
                        "TLS certificate replaced; new connections get it"
                    );
                }
                Reload::Refused(e) => {
                    metrics::counter!("payrelay_tls_reloads_total", "result" => "refused")
                        .increment(1);
                    tracing::warn!("TLS certificate not replaced, the previous one stays: {e}");
                }
            }
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) -> Option<()> {
    std::future::pending().await
}

fn read_files(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    Ok((read(&files.cert)?, read(&files.key)?))
}

fn parse_pair(
    files: &TlsFiles,
    (cert_pem, key_pem): &(Vec<u8>, Vec<u8>),
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate chain: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", files.cert.display()));
    }
    // The key file's parse errors are not quoted: they could echo part of the key.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
        format!(
            "{}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it",
            files.key.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} and {}: the key is not the certificate's",
            files.cert.display(),
            files.key.display()
        ),
        _ => format!(
            "{} and {}: unusable certificate or key ({})",
            files.cert.display(),
            files.key.display(),
            kind_of(&e)
        ),
    })
}

/// A rustls error named without its details, which for a key could quote key bytes.
fn kind_of(error: &rustls::Error) -> &'static str {
    match error {
        rustls::Error::General(_) => "unsupported key type",
        rustls::Error::InvalidCertificate(_) => "invalid certificate",
        _ => "rejected by rustls",
    }
}

fn fingerprint(pair: &CertifiedKey) -> String {
    pair.end_entity_cert()
        .map(|der| hex::encode(Sha256::digest(der.as_ref())))
        .unwrap_or_default()
}
