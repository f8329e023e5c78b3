//! Certificates made at test time with rcgen: a private CA and a server certificate it signs,
//! as PEM files (in a directory removed when the value is dropped) and as rustls
//! configurations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA and one server certificate signed by it.
///
/// Files: `ca.pem` (the CA), `cert.pem` (the chain a server presents: its certificate, then the
/// CA's, as a real chain with an intermediate looks), `key.pem` (the server's key).
#[derive(Debug)]
pub struct TestPki {
    dir: tempfile::TempDir,
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestPki {
    /// A CA, and a server certificate for `names` (DNS names or IP addresses) signed by it.
    pub fn new(names: &[&str]) -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("duplex-pki-")
            .tempdir()
            .expect("a temporary directory");

        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "duplex test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .expect("server certificate params")
            .signed_by(&leaf_key, &issuer)
            .expect("the server certificate");

        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write a PEM file");
        };
        write("ca.pem", ca_cert.pem());
        write("cert.pem", leaf.pem() + &ca_cert.pem());
        write("key.pem", leaf_key.serialize_pem());
        TestPki {
            ca: ca_cert.der().clone(),
            leaf: leaf.der().clone(),
            key: leaf_key.serialize_der(),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    /// `cert.pem`: the server's chain.
    pub fn cert(&self) -> PathBuf {
        self.dir().join("cert.pem")
    }

    /// `key.pem`: the server's private key.
    pub fn key(&self) -> PathBuf {
        self.dir().join("key.pem")
    }

    /// The CA certificate.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.clone()
    }

    /// A server configuration presenting the chain, with the ring provider.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf.clone(), self.ca.clone()], key)
            .expect("a server configuration");
        Arc::new(config)
    }

    /// A client configuration trusting only the CA, with the ring provider.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("the CA as a root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
