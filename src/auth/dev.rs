//! Embedded development issuer: a persistent ES256 key that mints local access tokens.
//!
//! Loopback-only by config (the config layer refuses `kind = "dev"` elsewhere). The private key
//! lives in `<state_dir>/dev-issuer-key.pem` (PKCS#8, mode 0600) so tokens survive restarts.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::settings::IssuerSettings;

/// File name of the key inside the state directory.
pub const KEY_FILE: &str = "dev-issuer-key.pem";
/// `client_id` claim of minted tokens.
pub const DEV_CLIENT_ID: &str = "mcpgate-dev";

#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("dev issuer state {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dev issuer key {path} is not a P-256 PKCS#8 key: {source}")]
    BadKey {
        path: PathBuf,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("no randomness available: {0}")]
    Random(getrandom::Error),
    #[error("signing failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The development issuer: one ES256 key and its public JWK.
pub struct DevIssuer {
    issuer_url: String,
    key: EncodingKey,
    jwk: Jwk,
    kid: String,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("issuer_url", &self.issuer_url)
            .field("kid", &self.kid)
            .finish()
    }
}

impl DevIssuer {
    /// Load the key from `state_dir`, creating the directory (0700) and key (0600) on first start.
    pub fn load_or_create(state_dir: &Path, issuer_url: &str) -> Result<Self, DevIssuerError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(KEY_FILE);
        let pem = match fs::read(&path) {
            Ok(pem) => {
                restrict_file(&path)?;
                pem
            }
            Err(e) if e.kind() == ErrorKind::NotFound => create_key_file(&path)?,
            Err(source) => return Err(DevIssuerError::Io { path, source }),
        };
        Self::from_pem(&pem, &path, issuer_url)
    }

    fn from_pem(pem: &[u8], path: &Path, issuer_url: &str) -> Result<Self, DevIssuerError> {
        let bad_key = |source| DevIssuerError::BadKey {
            path: path.to_owned(),
            source,
        };
        let key = EncodingKey::from_ec_pem(pem).map_err(bad_key)?;
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(bad_key)?;
        // RFC 7638 thumbprint as kid: stable for the key, and derived from nothing secret.
        let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(bad_key)?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self {
            issuer_url: issuer_url.trim_end_matches('/').to_owned(),
            key,
            jwk,
            kid,
        })
    }

    pub fn issuer_url(&self) -> &str {
        &self.issuer_url
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Public key set, served by the gateway at `<issuer>/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// RFC 8414 metadata. No token endpoint: tokens come from `mcpgate token`.
    pub fn discovery_document(&self) -> serde_json::Value {
        json!({
            "issuer": self.issuer_url,
            "jwks_uri": format!("{}/.well-known/jwks.json", self.issuer_url),
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
        })
    }

    /// Issuer settings trusting this key directly (no fetch).
    pub fn settings(&self, id: &str) -> IssuerSettings {
        let mut s = IssuerSettings::new(id, self.issuer_url.clone());
        s.algorithms = vec![Algorithm::ES256];
        s.static_keys = Some(self.jwks());
        s
    }

    /// Mint an RFC 9068 access token for `audience` (the route's resource URL).
    pub fn mint(
        &self,
        subject: &str,
        audience: &str,
        scopes: &[String],
        ttl: Duration,
    ) -> Result<String, DevIssuerError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(DevIssuerError::Random)?;
        let claims = json!({
            "iss": self.issuer_url,
            "sub": subject,
            "aud": audience,
            "client_id": DEV_CLIENT_ID,
            "scope": scopes.join(" "),
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(ttl.as_secs()),
            "jti": super::hex(&jti),
        });
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(DevIssuerError::Sign)
    }
}

fn create_private_dir(dir: &Path) -> Result<(), DevIssuerError> {
    let io = |source| DevIssuerError::Io {
        path: dir.to_owned(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io)
}

/// A key file readable by others is tightened rather than trusted as is.
fn restrict_file(path: &Path) -> Result<(), DevIssuerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let io = |source| DevIssuerError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "dev issuer key was readable by others; setting mode 0600");
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Generate a key and write it with `create_new` (0600); if another process won the race, use its key.
fn create_key_file(path: &Path) -> Result<Vec<u8>, DevIssuerError> {
    let pem = generate_p256_pem(path)?;
    let io = |source| DevIssuerError::Io {
        path: path.to_owned(),
        source,
    };
    // Written under a private name first and then linked into place, so a second process
    // starting on the same state directory never reads a half-written key.
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut file| file.write_all(&pem).and_then(|()| file.sync_all()))
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created dev issuer key");
            Ok(pem)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => fs::read(path).map_err(io),
        Err(source) => Err(io(source)),
    }
}

/// Order of the P-256 group (SEC 2 §2.4.2); a private scalar must lie in [1, n-1].
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// PKCS#8 (RFC 5208) wrapping an RFC 5915 ECPrivateKey on prime256v1, up to the private key.
const PKCS8_P256_PREFIX: [u8; 36] = [
    0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02,
    0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x6d, 0x30, 0x6b, 0x02,
    0x01, 0x01, 0x04, 0x20,
];
/// `[1] publicKey BIT STRING` header for an uncompressed point (RFC 5915 §3).
const PKCS8_P256_PUBLIC: [u8; 5] = [0xa1, 0x44, 0x03, 0x42, 0x00];
/// Same structure without the optional public key, used once to let the crypto library derive it.
const PKCS8_P256_BARE_PREFIX: [u8; 35] = [
    0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25, 0x02, 0x01,
    0x01, 0x04, 0x20,
];

/// A fresh P-256 key as PKCS#8 PEM. The main crate has no direct aws-lc-rs dependency, so the
/// scalar comes from the OS RNG and the public point is derived by jsonwebtoken's provider.
fn generate_p256_pem(path: &Path) -> Result<Vec<u8>, DevIssuerError> {
    let scalar = random_scalar()?;
    let bare = [&PKCS8_P256_BARE_PREFIX[..], &scalar].concat();
    let bad_key = |source| DevIssuerError::BadKey {
        path: path.to_owned(),
        source,
    };
    let jwk = Jwk::from_encoding_key(&EncodingKey::from_ec_der(&bare), Algorithm::ES256)
        .map_err(bad_key)?;
    let point = public_point(&jwk).map_err(bad_key)?;
    let der = [
        &PKCS8_P256_PREFIX[..],
        &scalar,
        &PKCS8_P256_PUBLIC,
        &[0x04],
        &point,
    ]
    .concat();
    Ok(pem_encode("PRIVATE KEY", &der).into_bytes())
}

fn random_scalar() -> Result<[u8; 32], DevIssuerError> {
    loop {
        let mut d = [0u8; 32];
        getrandom::fill(&mut d).map_err(DevIssuerError::Random)?;
        // Rejection sampling: big-endian byte order makes array comparison numeric comparison.
        if d != [0u8; 32] && d < P256_ORDER {
            return Ok(d);
        }
    }
}

fn public_point(jwk: &Jwk) -> Result<Vec<u8>, jsonwebtoken::errors::Error> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey.into());
    };
    let x = URL_SAFE_NO_PAD
        .decode(&ec.x)
        .map_err(jsonwebtoken::errors::ErrorKind::Base64)?;
    let y = URL_SAFE_NO_PAD
        .decode(&ec.y)
        .map_err(jsonwebtoken::errors::ErrorKind::Base64)?;
    if x.len() != 32 || y.len() != 32 {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey.into());
    }
    Ok([x, y].concat())
}

/// RFC 7468 textual encoding, 64-character lines.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let mut rnd = [0u8; 8];
        getrandom::fill(&mut rnd).unwrap();
        std::env::temp_dir().join(format!("mcpgate-dev-{name}-{}", super::super::hex(&rnd)))
    }

    #[test]
    fn creates_key_with_private_permissions_and_reloads_it() {
        let dir = temp_dir("create").join("state");
        let first = DevIssuer::load_or_create(&dir, "http://127.0.0.1:8443/").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key_mode = fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(key_mode & 0o777, 0o600);
            let dir_mode = fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(dir_mode & 0o777, 0o700);
        }
        let second = DevIssuer::load_or_create(&dir, "http://127.0.0.1:8443").unwrap();
        assert_eq!(first.kid(), second.kid());
        assert_eq!(first.jwks(), second.jwks());
        assert_eq!(first.issuer_url(), "http://127.0.0.1:8443");
        let doc = first.discovery_document();
        assert_eq!(
            doc["jwks_uri"],
            "http://127.0.0.1:8443/.well-known/jwks.json"
        );
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn generated_pem_holds_matching_public_key() {
        let pem = generate_p256_pem(Path::new("mem")).unwrap();
        let text = String::from_utf8(pem.clone()).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = EncodingKey::from_ec_pem(&pem).unwrap();
        let from_full = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        let der = STANDARD
            .decode(
                text.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap();
        assert_eq!(der.len(), 138);
        let bare = [&PKCS8_P256_BARE_PREFIX[..], &der[36..68]].concat();
        let from_bare =
            Jwk::from_encoding_key(&EncodingKey::from_ec_der(&bare), Algorithm::ES256).unwrap();
        assert_eq!(from_full.algorithm, from_bare.algorithm);
    }
}
