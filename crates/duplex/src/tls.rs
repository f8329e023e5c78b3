//! TLS with [rustls](https://docs.rs/rustls): `wss://` for clients, PEM certificates for servers.
//!
//! The crypto provider is *ring*, chosen explicitly for every configuration built here
//! (`builder_with_provider`): nothing depends on a process-wide default provider, so nothing
//! can panic for lack of one, and the build needs only the stock toolchain and a C compiler
//! (rustls' default, aws-lc-rs, also needs cmake and nasm).
//!
//! # Servers
//!
//! ```no_run
//! # async fn run() -> duplex::Result<()> {
//! use std::time::Duration;
//! let acceptor = duplex::tls::acceptor_from_pem("cert.pem", "key.pem")?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! let (tcp, _) = listener.accept().await?;
//! let tls = duplex::tls::handshake(&acceptor, tcp, Duration::from_secs(10)).await?;
//! let mut ws = duplex::accept(tls).await?;
//! # Ok(()) }
//! ```
//!
//! # Clients
//!
//! `wss://` URLs work with [`crate::connect`] and [`crate::ClientBuilder`], trusting the
//! Mozilla roots bundled by `webpki-roots` by default. [`ClientBuilder::tls_roots`] switches to
//! the platform's store, [`ClientBuilder::ca_file`] adds a private CA, and
//! [`ClientBuilder::danger_accept_invalid_certs`] turns verification off for development.
//! The client sends SNI for host names and offers ALPN `http/1.1` (`h2` first with
//! [`ClientBuilder::http2`]; see `duplex::http2`). Servers offer `http/1.1`; wrap their
//! configuration in `offer_http2` (feature `http2`) to offer `h2` too.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::{ClientBuilder, Error, MaybeTlsStream, Result};

pub use rustls;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The application protocol of the WebSocket opening handshake of RFC 6455 (section 4.1).
const ALPN_HTTP11: &[u8] = b"http/1.1";

/// HTTP/2, over which WebSockets are streams (RFC 8441); offered first when HTTP/2 is wanted.
const ALPN_H2: &[u8] = b"h2";

/// What went wrong setting up TLS.
///
/// These happen before any HTTP is exchanged, so they carry neither an HTTP status nor a close
/// code: the transport is simply not established.
///
/// ```
/// let err = duplex::tls::server_config_from_pem("/nonexistent/cert.pem", "/nonexistent/key.pem")
///     .unwrap_err();
/// assert!(err.to_string().contains("/nonexistent/cert.pem"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file that should hold PEM data is malformed.
    #[error("{}: invalid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A certificate file holds no `BEGIN CERTIFICATE` block.
    #[error("{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)", path.display())]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// A key file holds no private key.
    #[error("{}: no private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the configuration (a key that does not match the certificate, a
    /// certificate it cannot parse).
    #[error("invalid TLS configuration: {0}")]
    Config(rustls::Error),
    /// The platform's certificate store gave no usable root certificate.
    #[error("no root certificates could be loaded from the platform: {0}")]
    NativeRoots(String),
    /// The URL's host cannot be used as a TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// The server's certificate was refused: not signed by a trusted CA, expired, or issued
    /// for another name.
    #[error(
        "the certificate of {host} is not trusted: {reason} (trust its CA with a custom CA \
         file, or turn verification off for development only)"
    )]
    UntrustedCertificate {
        /// The host connected to.
        host: String,
        /// What rustls found wrong.
        reason: rustls::Error,
    },
    /// The TLS handshake failed for another reason (no common protocol version or cipher, the
    /// peer closed the connection, a timeout).
    #[error("TLS handshake with {host} failed: {error}")]
    Handshake {
        /// The peer.
        host: String,
        /// Why.
        error: io::Error,
    },
}

/// The crypto provider every configuration here is built with (*ring*).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Reads every certificate of a PEM file (a server's chain: its own certificate first, then
/// the intermediates; or CA certificates to trust).
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let path = path.as_ref();
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let path = path.as_ref();
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => pem_error(path, other),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// A server configuration from a certificate chain and its private key, offering ALPN
/// `http/1.1` and TLS 1.2 and 1.3.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The same server configuration offering ALPN `h2` before `http/1.1`, for a server that
/// speaks both on one port: after the handshake,
/// [`MaybeTlsStream::alpn_protocol`] (or the rustls connection's `alpn_protocol()`) says
/// which the client chose; `h2` goes to [`crate::http2::accept`], anything else to
/// [`crate::Handshake::read`].
///
/// Only for servers that handle both: a client that chose `h2` sends HTTP/2 frames, which an
/// HTTP/1.1-only server cannot read.
///
/// ```no_run
/// # async fn run(tcp: tokio::net::TcpStream) -> duplex::Result<()> {
/// use duplex::{tls, MaybeTlsStream};
/// let config = tls::offer_http2(tls::server_config_from_pem("cert.pem", "key.pem")?);
/// let acceptor = tls::TlsAcceptor::from(config);
/// let stream = MaybeTlsStream::ServerTls(Box::new(
///     tls::handshake(&acceptor, tcp, std::time::Duration::from_secs(10)).await?,
/// ));
/// if stream.alpn_protocol() == Some(b"h2") {
///     let conn = duplex::http2::accept(stream, duplex::Config::default()).await?;
/// } else {
///     let handshake = duplex::Handshake::read(stream, duplex::Config::default()).await?;
/// }
/// # Ok(()) }
/// ```
#[cfg(feature = "http2")]
pub fn offer_http2(config: Arc<ServerConfig>) -> Arc<ServerConfig> {
    let mut config = Arc::unwrap_or_clone(config);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Arc::new(config)
}

/// A server configuration from PEM files: the certificate chain (leaf first) and the private
/// key. What `duplex serve --tls-cert --tls-key` uses.
///
/// ```no_run
/// let config = duplex::tls::server_config_from_pem("cert.pem", "key.pem")?;
/// let acceptor = duplex::tls::TlsAcceptor::from(config);
/// # Ok::<_, duplex::tls::TlsError>(())
/// ```
pub fn server_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(load_certs(cert_path)?, load_private_key(key_path)?)
}

/// A [`TlsAcceptor`] from PEM files; see [`server_config_from_pem`].
pub fn acceptor_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config_from_pem(
        cert_path, key_path,
    )?))
}

/// Performs the server side of the TLS handshake within `timeout` (pass
/// [`Config::handshake_timeout`](crate::Config::handshake_timeout)): a client that opens a
/// connection and sends nothing must not hold it. Then hand the stream to [`crate::accept`]
/// or [`crate::server::Handshake::read`].
///
/// # Cancel safety
///
/// Not cancel safe: a cancelled handshake leaves the transport unusable.
pub async fn handshake<S>(
    acceptor: &TlsAcceptor,
    io: S,
    timeout: Duration,
) -> Result<ServerTlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
        Err(_) => Err(Error::Timeout("TLS handshake")),
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(error)) => Err(TlsError::Handshake {
            host: "client".into(),
            error,
        }
        .into()),
    }
}

/// Which root certificates a client trusts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Roots {
    /// Mozilla's root program as bundled in the `webpki-roots` crate (the default): the same on
    /// every machine, no system files read.
    #[default]
    Webpki,
    /// The operating system's store (`rustls-native-certs`): what the machine's administrator
    /// trusts, including corporate CAs.
    Native,
    /// None: only the CAs added with [`ClientBuilder::ca_file`] or
    /// [`ClientBuilder::add_root_certificate`].
    None,
}

/// The TLS settings of a client.
#[derive(Clone, Default)]
pub(crate) struct ClientTls {
    roots: Roots,
    extra_roots: Vec<CertificateDer<'static>>,
    ca_files: Vec<PathBuf>,
    insecure: bool,
    custom: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots)
            .field("extra_roots", &self.extra_roots.len())
            .field("ca_files", &self.ca_files)
            .field("insecure", &self.insecure)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl ClientTls {
    fn is_default(&self) -> bool {
        self.roots == Roots::Webpki
            && self.extra_roots.is_empty()
            && self.ca_files.is_empty()
            && !self.insecure
            && self.custom.is_none()
    }

    /// The rustls configuration these settings describe. The default one is built once per
    /// process: parsing the bundled roots for every connection would be wasted work.
    fn client_config(&self, offer_h2: bool) -> Result<Arc<ClientConfig>, TlsError> {
        if let Some(custom) = &self.custom {
            return Ok(custom.clone());
        }
        static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        static DEFAULT_H2: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        let default = if offer_h2 { &DEFAULT_H2 } else { &DEFAULT };
        if self.is_default() {
            if let Some(config) = default.get() {
                return Ok(config.clone());
            }
        }
        let builder = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?;
        let mut config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(crypto_provider())))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.root_store()?)
                .with_no_client_auth()
        };
        config.alpn_protocols = if offer_h2 {
            vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
        } else {
            vec![ALPN_HTTP11.to_vec()]
        };
        let config = Arc::new(config);
        if self.is_default() {
            let _ = default.set(config.clone());
        }
        Ok(config)
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        match self.roots {
            Roots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Roots::Native => {
                let found = rustls_native_certs::load_native_certs();
                // Some stores hold certificates rustls cannot parse; skipping them is what
                // browsers do too, as long as some usable roots remain.
                let (added, _ignored) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(TlsError::NativeRoots(if why.is_empty() {
                        "the store is empty".into()
                    } else {
                        why
                    }));
                }
            }
            Roots::None => {}
        }
        for path in &self.ca_files {
            for cert in load_certs(path)? {
                store.add(cert).map_err(TlsError::Config)?;
            }
        }
        for cert in &self.extra_roots {
            store.add(cert.clone()).map_err(TlsError::Config)?;
        }
        Ok(store)
    }

    /// Runs the client side of the TLS handshake over `tcp` for `host`, offering ALPN `h2`
    /// before `http/1.1` if `offer_h2`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        offer_h2: bool,
    ) -> Result<MaybeTlsStream> {
        let config = self.client_config(offer_h2)?;
        // An IP address is verified against the certificate's IP SANs and sent without SNI
        // (RFC 6066 section 3 allows only host names there); rustls does both.
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| TlsError::ServerName(host.to_owned()))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| handshake_error(host, source))?;
        Ok(MaybeTlsStream::Tls(Box::new(tls)))
    }
}

/// Turns the I/O error tokio-rustls reports into one that says what happened: a refused
/// certificate is by far the most common failure, and deserves a message that says how to fix it.
fn handshake_error(host: &str, source: io::Error) -> TlsError {
    let reason = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match reason {
        Some(reason @ rustls::Error::InvalidCertificate(_)) => TlsError::UntrustedCertificate {
            host: host.to_owned(),
            reason: reason.clone(),
        },
        _ => TlsError::Handshake {
            host: host.to_owned(),
            error: source,
        },
    }
}

/// Accepts any certificate, for [`ClientBuilder::danger_accept_invalid_certs`]. Handshake
/// signatures are still checked, so the connection is at least consistent with the presented
/// certificate; anyone can present one, which is why this is for development only.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS options of a client (`wss://` URLs).
impl ClientBuilder {
    /// Chooses the root certificates to trust (default [`Roots::Webpki`]).
    ///
    /// ```
    /// let builder = duplex::ClientBuilder::new("wss://example.com/")?
    ///     .tls_roots(duplex::tls::Roots::Native);
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn tls_roots(mut self, roots: Roots) -> Self {
        self.tls.roots = roots;
        self
    }

    /// Also trusts the CA certificates in a PEM file (a private CA, or a self-signed server
    /// certificate). The file is read when connecting; a missing or malformed file fails the
    /// connection with [`Error::Tls`].
    ///
    /// ```
    /// let builder = duplex::ClientBuilder::new("wss://dev.internal/")?.ca_file("ca.pem");
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca_files.push(path.into());
        self
    }

    /// Also trusts this CA certificate (DER).
    pub fn add_root_certificate(mut self, cert: CertificateDer<'static>) -> Self {
        self.tls.extra_roots.push(cert);
        self
    }

    /// Accepts any server certificate: expired, self-signed, for another name.
    ///
    /// **For development only**: the connection is encrypted but anyone on the path can
    /// impersonate the server.
    ///
    /// ```
    /// let builder = duplex::ClientBuilder::new("wss://localhost:8443/")?
    ///     .danger_accept_invalid_certs(true);
    /// # Ok::<_, duplex::Error>(())
    /// ```
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.tls.insecure = accept;
        self
    }

    /// Uses this rustls configuration as is (client certificates, pinned keys, other ALPN
    /// values), instead of the one the other TLS options describe.
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.tls.custom = Some(config);
        self
    }
}
