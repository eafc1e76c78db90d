//! A real OAuth authorization server for integration tests: RFC 8414 and OpenID discovery,
//! a JWKS of keys generated in the test (RS256, ES256, EdDSA) that can be rotated, an RFC 7662
//! introspection endpoint with `client_secret_basic`, and token minting with a claims builder.
//! It runs on an ephemeral loopback port and can be taken down and brought back up.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

/// Path of the issuer identifier below the server's origin: discovery has to insert the
/// well-known segment (RFC 8414 §3.1), not append it.
pub const REALM_PATH: &str = "/realms/test";
/// The client the gateway authenticates as at the introspection endpoint.
pub const INTROSPECTION_CLIENT_ID: &str = "mcpgate";
pub const INTROSPECTION_SECRET: &str = "introspection-secret-for-tests";

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    /// SubjectPublicKeyInfo PEM, for the HS256-with-the-public-key confusion attack.
    pub public_pem: String,
}

impl TestKey {
    /// A fresh key pair for `alg` (RS256, ES256 or EdDSA), published under `kid`.
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let (rc_alg, from_pem): (&'static rcgen::SignatureAlgorithm, fn(&[u8]) -> _) = match alg {
            Algorithm::RS256 => (&rcgen::PKCS_RSA_SHA256, EncodingKey::from_rsa_pem),
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
            Algorithm::EdDSA => (&rcgen::PKCS_ED25519, EncodingKey::from_ed_pem),
            other => panic!("unsupported test algorithm {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rc_alg).expect("key generation");
        let encoding: EncodingKey = from_pem(pair.serialize_pem().as_bytes()).expect("key PEM");
        let mut jwk = match alg {
            // rcgen writes PKCS#8 v2 for Ed25519, which jsonwebtoken cannot turn into a JWK.
            Algorithm::EdDSA => {
                let raw = pair.public_key_raw();
                ed25519_jwk(&raw[raw.len() - 32..])
            }
            _ => Jwk::from_encoding_key(&encoding, alg).expect("JWK from key"),
        };
        jwk.common.key_id = Some(kid.to_owned());
        TestKey {
            alg,
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    /// An RS256 key. RSA generation is slow in debug builds, so one key pair is shared by the
    /// whole test binary; each call only gives it its own `kid`.
    pub fn rsa(kid: &str) -> Self {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| TestKey::generate(Algorithm::RS256, "rsa"))
            .with_kid(kid)
    }

    pub fn es256(kid: &str) -> Self {
        Self::generate(Algorithm::ES256, kid)
    }

    pub fn eddsa(kid: &str) -> Self {
        Self::generate(Algorithm::EdDSA, kid)
    }

    /// The same key material published under another `kid`.
    pub fn with_kid(&self, kid: &str) -> Self {
        let mut k = self.clone();
        k.jwk.common.key_id = Some(kid.to_owned());
        k
    }

    pub fn kid(&self) -> &str {
        self.jwk.common.key_id.as_deref().unwrap_or_default()
    }
}

fn ed25519_jwk(public: &[u8]) -> Jwk {
    let x = URL_SAFE_NO_PAD.encode(public);
    serde_json::from_value(
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig"}),
    )
    .expect("Ed25519 JWK")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// What the introspection endpoint answers for one token.
#[derive(Clone)]
pub struct IntrospectionReply {
    pub body: Value,
    pub delay: Duration,
}

#[derive(Default)]
struct State {
    keys: Mutex<Vec<TestKey>>,
    introspection: Mutex<HashMap<String, IntrospectionReply>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
    metadata_fetches: AtomicUsize,
    introspection_calls: AtomicUsize,
    introspection_bad_client: AtomicUsize,
    /// Set once the server knows its own address.
    issuer: OnceLock<String>,
}

/// A running authorization server on `127.0.0.1:<ephemeral>`. It stops with the test's runtime.
pub struct TestIssuer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl TestIssuer {
    /// Starts a server publishing `keys`; the first key signs tokens by default.
    pub async fn start(keys: Vec<TestKey>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind issuer");
        let addr = listener.local_addr().expect("issuer address");
        let state = Arc::new(State::default());
        *state.keys.lock().expect("lock") = keys;
        let _ = state.issuer.set(format!("http://{addr}{REALM_PATH}"));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestIssuer { addr, state }
    }

    /// The issuer identifier: `http://127.0.0.1:<port>/realms/test`, the exact `iss` of its tokens.
    pub fn issuer(&self) -> String {
        self.state.issuer.get().expect("issuer set").clone()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/protocol/openid-connect/certs", self.issuer())
    }

    pub fn introspection_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token/introspect", self.issuer())
    }

    /// Path of the RFC 8414 document (path-inserted form).
    pub fn rfc8414_path() -> String {
        format!("/.well-known/oauth-authorization-server{REALM_PATH}")
    }

    /// The RFC 8414 metadata document exactly as served.
    pub fn rfc8414_document(&self) -> String {
        metadata(&self.issuer(), "rfc8414")
    }

    /// `[[issuers]]` TOML for this server with short test intervals (discovery, no `jwks_uri`).
    /// `extra` lines go inside the table, e.g. `refresh_min_interval = "5s"` to override.
    pub fn toml(&self, id: &str, extra: &[&str]) -> String {
        let mut lines = vec![
            format!("id = {id:?}"),
            format!("issuer = {:?}", self.issuer()),
            r#"algorithms = ["RS256", "ES256", "EdDSA"]"#.to_string(),
        ];
        let defaults = [
            ("leeway", "\"5s\""),
            ("refresh_min_interval", "\"1s\""),
            ("refresh_default", "\"5m\""),
            ("refresh_max", "\"10m\""),
            ("max_staleness", "\"1h\""),
        ];
        for (key, value) in defaults {
            if !extra.iter().any(|l| l.trim_start().starts_with(key)) {
                lines.push(format!("{key} = {value}"));
            }
        }
        lines.extend(extra.iter().map(|l| l.to_string()));
        format!("[[issuers]]\n{}\n", lines.join("\n"))
    }

    /// As [`TestIssuer::toml`], plus `[issuers.introspection]` whose client secret is written to
    /// a file in `dir` (secrets are never inline in the config).
    pub fn toml_with_introspection(&self, id: &str, dir: &Path, timeout: &str) -> String {
        self.toml_with_introspection_cached(id, dir, timeout, "5m")
    }

    /// As [`TestIssuer::toml_with_introspection`], with active answers cached for `cache_ttl`.
    pub fn toml_with_introspection_cached(
        &self,
        id: &str,
        dir: &Path,
        timeout: &str,
        cache_ttl: &str,
    ) -> String {
        let secret_file = dir.join(format!("{id}-introspection-secret"));
        std::fs::write(&secret_file, INTROSPECTION_SECRET).expect("write secret file");
        format!(
            "{}\n[issuers.introspection]\nendpoint = {:?}\nclient_id = {INTROSPECTION_CLIENT_ID:?}\nclient_secret_file = {:?}\ncache_ttl = {cache_ttl:?}\ninactive_ttl = \"1s\"\ntimeout = {timeout:?}\n",
            self.toml(id, &[]),
            self.introspection_endpoint(),
            secret_file.display().to_string(),
        )
    }

    /// Publishes one more key (rotation in).
    pub fn add_key(&self, key: &TestKey) {
        self.state.keys.lock().expect("lock").push(key.clone());
    }

    /// Stops publishing the key with this `kid` (rotation out).
    pub fn remove_key(&self, kid: &str) {
        self.state
            .keys
            .lock()
            .expect("lock")
            .retain(|k| k.kid() != kid);
    }

    /// While down, every endpoint answers 503.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// JWKS requests received (also counted while down).
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Discovery document requests received (also counted while down).
    pub fn metadata_fetches(&self) -> usize {
        self.state.metadata_fetches.load(Ordering::SeqCst)
    }

    /// Introspection requests with valid client credentials.
    pub fn introspection_calls(&self) -> usize {
        self.state.introspection_calls.load(Ordering::SeqCst)
    }

    /// Introspection requests refused for missing or wrong client credentials.
    pub fn introspection_bad_client(&self) -> usize {
        self.state.introspection_bad_client.load(Ordering::SeqCst)
    }

    /// Introspection of `token` answers `body` after `delay`. Unknown tokens are inactive.
    pub fn introspection_reply(&self, token: &str, body: Value, delay: Duration) {
        self.state
            .introspection
            .lock()
            .expect("lock")
            .insert(token.to_owned(), IntrospectionReply { body, delay });
    }

    /// Introspection of `token` says active, for `aud`, with `scope`.
    pub fn introspection_active(&self, token: &str, sub: &str, aud: &str, scope: &str) {
        let body = json!({
            "active": true, "iss": self.issuer(), "sub": sub, "aud": aud, "scope": scope,
            "client_id": "opaque-client", "token_type": "Bearer", "exp": now() + 300,
        });
        self.introspection_reply(token, body, Duration::ZERO);
    }

    /// A token signed by the default (first) key, with `iss`, `sub`, `client_id`, `iat`, `nbf`,
    /// `exp` (+300 s) and a unique `jti`; no `aud` and no `scope` until set.
    pub fn token(&self) -> TokenBuilder {
        let key = self
            .state
            .keys
            .lock()
            .expect("lock")
            .first()
            .cloned()
            .expect("the issuer has a key to sign with");
        TokenBuilder::new(&self.issuer(), key)
    }
}

/// Builds and signs a JWT access token.
#[derive(Clone)]
pub struct TokenBuilder {
    header: Header,
    claims: Map<String, Value>,
    key: TestKey,
}

impl TokenBuilder {
    pub fn new(iss: &str, key: TestKey) -> Self {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let mut header = Header::new(key.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(key.kid().to_owned());
        let t = now();
        let jti = format!(
            "jti-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let claims = json!({
            "iss": iss, "sub": "alice", "client_id": "test-client",
            "iat": t, "nbf": t, "exp": t + 300, "jti": jti,
        });
        let Value::Object(claims) = claims else {
            unreachable!("an object literal")
        };
        TokenBuilder {
            header,
            claims,
            key,
        }
    }

    /// Sets (or replaces) any claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    pub fn iss(self, iss: &str) -> Self {
        self.claim("iss", iss)
    }

    pub fn sub(self, sub: &str) -> Self {
        self.claim("sub", sub)
    }

    pub fn client_id(self, client_id: &str) -> Self {
        self.claim("client_id", client_id)
    }

    /// `aud` as one string.
    pub fn aud(self, aud: &str) -> Self {
        self.claim("aud", aud)
    }

    /// `aud` as an array.
    pub fn auds(self, auds: &[&str]) -> Self {
        self.claim("aud", json!(auds))
    }

    /// `scope`, space-separated (RFC 9068 §2.2.3).
    pub fn scope(self, scope: &str) -> Self {
        self.claim("scope", scope)
    }

    /// `scp` as an array (Entra, Okta).
    pub fn scp(self, scopes: &[&str]) -> Self {
        self.claim("scp", json!(scopes))
    }

    /// `exp` relative to now, in seconds (negative: already expired).
    pub fn exp_in(self, secs: i64) -> Self {
        self.claim("exp", now() + secs)
    }

    pub fn nbf_in(self, secs: i64) -> Self {
        self.claim("nbf", now() + secs)
    }

    pub fn iat_in(self, secs: i64) -> Self {
        self.claim("iat", now() + secs)
    }

    /// Header `kid`; `None` leaves it out.
    pub fn kid(mut self, kid: Option<&str>) -> Self {
        self.header.kid = kid.map(str::to_owned);
        self
    }

    /// Header `typ`; `None` leaves it out.
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.header.typ = typ.map(str::to_owned);
        self
    }

    /// Header `alg` (it must suit the signing key, or signing fails).
    pub fn alg(mut self, alg: Algorithm) -> Self {
        self.header.alg = alg;
        self
    }

    /// Signs with `key`, and uses its `kid` and `alg` in the header.
    pub fn key(mut self, key: &TestKey) -> Self {
        self.header.alg = key.alg;
        self.header.kid = Some(key.kid().to_owned());
        self.key = key.clone();
        self
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The compact JWS.
    pub fn sign(&self) -> String {
        jsonwebtoken::encode(&self.header, &self.claims, &self.key.encoding).expect("sign token")
    }

    /// `alg: none` with an empty signature (RFC 7519 §6, the classic downgrade).
    pub fn unsigned_none(&self) -> String {
        let mut header = json!({"alg": "none", "typ": "at+jwt"});
        if let Some(kid) = &self.header.kid {
            header["kid"] = json!(kid);
        }
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(self.claims.clone()).to_string())
        )
    }

    /// HS256 keyed with the signing key's public PEM (RFC 8725 §2.1 key confusion).
    pub fn hs256_with_public_key(&self) -> String {
        let mut header = self.header.clone();
        header.alg = Algorithm::HS256;
        let key = EncodingKey::from_secret(self.key.public_pem.as_bytes());
        jsonwebtoken::encode(&header, &self.claims, &key).expect("sign HS256")
    }
}

/// Replaces the payload of a signed token with `claims`, keeping header and signature.
pub fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts = token.split('.');
    let (header, _, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    format!(
        "{header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The decoded payload of a compact JWS.
pub fn payload_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload segment");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON payload")
}

fn metadata(issuer: &str, flavour: &str) -> String {
    // Built by hand so the bytes are fixed: the gateway must re-serve them unchanged.
    format!(
        concat!(
            "{{\"issuer\":\"{iss}\",",
            "\"authorization_endpoint\":\"{iss}/protocol/openid-connect/auth\",",
            "\"token_endpoint\":\"{iss}/protocol/openid-connect/token\",",
            "\"jwks_uri\":\"{iss}/protocol/openid-connect/certs\",",
            "\"introspection_endpoint\":\"{iss}/protocol/openid-connect/token/introspect\",",
            "\"registration_endpoint\":\"{iss}/clients-registrations/openid-connect\",",
            "\"response_types_supported\":[\"code\"],",
            "\"grant_types_supported\":[\"authorization_code\",\"refresh_token\",\"client_credentials\"],",
            "\"code_challenge_methods_supported\":[\"S256\"],",
            "\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\",\"none\"],",
            "\"x_test_document\":\"{flavour}\"}}"
        ),
        iss = issuer,
        flavour = flavour
    )
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let issuer = state.issuer.get().expect("issuer set").clone();
    let realm = REALM_PATH;
    let path = req.uri().path().to_owned();
    let is_jwks = path == format!("{realm}/protocol/openid-connect/certs");
    let metadata_flavour = if path == format!("/.well-known/oauth-authorization-server{realm}") {
        Some("rfc8414")
    } else if path == format!("/.well-known/openid-configuration{realm}")
        || path == format!("{realm}/.well-known/openid-configuration")
    {
        Some("openid")
    } else {
        None
    };
    if is_jwks {
        state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    }
    if metadata_flavour.is_some() {
        state.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    }
    if state.down.load(Ordering::SeqCst) {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"down"}"#.into(),
        );
    }
    if is_jwks {
        let keys = state.keys.lock().expect("lock");
        let set = JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        };
        return json(StatusCode::OK, serde_json::to_string(&set).expect("JWKS"));
    }
    if let Some(flavour) = metadata_flavour {
        return json(StatusCode::OK, metadata(&issuer, flavour));
    }
    if path == format!("{realm}/protocol/openid-connect/token/introspect") {
        return introspect(state, req).await;
    }
    json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into())
}

/// RFC 7662 §2: POST, form body, client authenticated with `client_secret_basic`.
async fn introspect(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{INTROSPECTION_CLIENT_ID}:{INTROSPECTION_SECRET}"))
    );
    let authorized = req.method() == http::Method::POST
        && req
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized {
        state
            .introspection_bad_client
            .fetch_add(1, Ordering::SeqCst);
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_client"}"#.into(),
        );
    }
    state.introspection_calls.fetch_add(1, Ordering::SeqCst);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let token = form.get("token").cloned().unwrap_or_default();
    let reply = state
        .introspection
        .lock()
        .expect("lock")
        .get(&token)
        .cloned()
        .unwrap_or(IntrospectionReply {
            body: json!({"active": false}),
            delay: Duration::ZERO,
        });
    tokio::time::sleep(reply.delay).await;
    json(StatusCode::OK, reply.body.to_string())
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// A parsed `WWW-Authenticate: Bearer k="v", …` challenge (RFC 6750 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses one challenge with quoted-string parameters; panics on anything else.
    pub fn parse(header: &str) -> Self {
        let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if rest.is_empty() {
                break;
            }
            let (key, after) = rest
                .split_once('=')
                .unwrap_or_else(|| panic!("parameter without '=' in {header:?}"));
            let after = after
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted value in {header:?}"));
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => value.push(chars.next().expect("escaped char").1),
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated value in {header:?}"),
                }
            };
            params.push((key.trim().to_string(), value));
            rest = &after[end + 1..];
        }
        Challenge {
            scheme: scheme.to_string(),
            params,
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `scope` parameter as a sorted list of scope tokens.
    pub fn scopes(&self) -> Vec<String> {
        let mut scopes: Vec<String> = self
            .param("scope")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        scopes.sort();
        scopes
    }
}

/// The challenge of a response; panics if it has none.
pub fn challenge_of(resp: &reqwest::Response) -> Challenge {
    let value = resp
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("no WWW-Authenticate on a {} response", resp.status()))
        .to_str()
        .expect("ASCII challenge");
    Challenge::parse(value)
}
