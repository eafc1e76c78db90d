//! A throwaway certificate authority: server certificates of each key type the gateway must
//! load, and clients that trust exactly this CA.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Key types a server certificate can use; the gateway must serve all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcdsaP256,
    Ed25519,
}

impl KeyKind {
    pub const ALL: [KeyKind; 3] = [KeyKind::Rsa, KeyKind::EcdsaP256, KeyKind::Ed25519];

    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyKind::Rsa => &rcgen::PKCS_RSA_SHA256,
            KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

/// Which HTTP version a test client insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// Whatever ALPN (or plain HTTP/1.1) gives.
    Auto,
    /// ALPN offers only http/1.1.
    Http1,
    /// ALPN offers only h2 (prior knowledge on plain TCP).
    Http2,
}

/// A server certificate and its private key, PEM encoded.
#[derive(Clone)]
pub struct TestCert {
    pub kind: KeyKind,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA generated in the test (ECDSA P-256); it signs server certificates for `localhost`
/// and `127.0.0.1`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub ca_pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mcpgate test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            ca_pem: cert.pem(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` with a key of `kind`.
    pub fn server_cert(&self, kind: KeyKind) -> TestCert {
        let key = KeyPair::generate_for(kind.algorithm()).expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        TestCert {
            kind,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A reqwest client that trusts only this CA and never uses a proxy.
    pub fn client(&self, version: HttpVersion) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA PEM");
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
        version_client(builder, version)
    }

    /// A raw rustls client config trusting this CA and offering `alpn`, for handshake tests.
    pub fn rustls_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.rustls_config_for(rustls::DEFAULT_VERSIONS, alpn)
    }

    /// The same, offering only the protocol `versions`.
    pub fn rustls_config_for(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA DER");
        roots.add(ca).expect("CA accepted as a root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("supported protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// A plain-HTTP reqwest client that never uses a proxy.
pub fn plain_client(version: HttpVersion) -> reqwest::Client {
    version_client(reqwest::Client::builder(), version)
}

fn version_client(builder: reqwest::ClientBuilder, version: HttpVersion) -> reqwest::Client {
    // A read that stalls this long is a hang, not a slow test: fail instead of waiting forever.
    let builder = builder
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(10));
    let builder = match version {
        HttpVersion::Auto => builder,
        HttpVersion::Http1 => builder.http1_only(),
        HttpVersion::Http2 => builder.http2_prior_knowledge(),
    };
    builder.build().expect("reqwest client")
}
