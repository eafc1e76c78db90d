//! Test harness: an in-process issuer (metadata, JWKS, introspection) and token minting.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use url::form_urlencoded;

use crate::auth::{Authenticator, IssuerSettings, RouteAuth};

pub const AUD: &str = "https://gw.example/calendar/mcp";
pub const OTHER_AUD: &str = "https://gw.example/files/mcp";

/// A signing key with its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    /// SubjectPublicKeyInfo PEM (for the HS256 key-confusion attack).
    pub public_pem: String,
}

impl TestKey {
    pub fn generate(alg: Algorithm, kid: &str) -> Self {
        let (rc_alg, from_pem): (&'static rcgen::SignatureAlgorithm, fn(&[u8]) -> _) = match alg {
            Algorithm::RS256 => (&rcgen::PKCS_RSA_SHA256, EncodingKey::from_rsa_pem),
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
            Algorithm::EdDSA => (&rcgen::PKCS_ED25519, EncodingKey::from_ed_pem),
            other => panic!("unsupported test alg {other:?}"),
        };
        let pair = rcgen::KeyPair::generate_for(rc_alg).expect("keygen");
        let encoding: EncodingKey = from_pem(pair.serialize_pem().as_bytes()).expect("pem");
        let mut jwk = match alg {
            // rcgen writes PKCS#8 v2 (with public key), which jsonwebtoken cannot turn into a JWK.
            Algorithm::EdDSA => {
                ed25519_jwk(&pair.public_key_raw()[pair.public_key_raw().len() - 32..])
            }
            _ => Jwk::from_encoding_key(&encoding, alg).expect("jwk"),
        };
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            alg,
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    /// RSA key generation is slow in debug builds: share one per test binary.
    pub fn rsa() -> Self {
        static KEY: OnceLock<TestKey> = OnceLock::new();
        KEY.get_or_init(|| TestKey::generate(Algorithm::RS256, "rsa-1"))
            .clone()
    }

    pub fn with_kid(&self, kid: &str) -> Self {
        let mut k = self.clone();
        k.jwk.common.key_id = Some(kid.to_owned());
        k
    }

    pub fn kid(&self) -> &str {
        self.jwk.common.key_id.as_deref().unwrap_or_default()
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("at+jwt".into());
        header.kid = Some(self.kid().to_owned());
        self.sign_with(header, claims)
    }

    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

fn ed25519_jwk(public: &[u8]) -> Jwk {
    use base64::Engine;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
    serde_json::from_value(
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "use": "sig"}),
    )
    .unwrap()
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    serde_json::to_value(JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    })
    .unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Standard valid claims for `iss`, audience [`AUD`].
pub fn claims(iss: &str) -> Value {
    let now = now();
    json!({
        "iss": iss, "sub": "alice", "aud": AUD, "client_id": "cli",
        "scope": "mcp:tools calendar:read", "iat": now, "nbf": now, "exp": now + 300,
    })
}

/// What the fake introspection endpoint answers for a token.
#[derive(Clone)]
pub struct IntrospectionReply {
    pub body: Value,
    pub delay: Duration,
}

#[derive(Default)]
pub struct ServerState {
    pub jwks: Mutex<Value>,
    pub jwks_cache_control: Mutex<Option<String>>,
    pub documents: Mutex<HashMap<String, Value>>,
    pub introspection: Mutex<HashMap<String, IntrospectionReply>>,
    pub introspection_auth: Mutex<Option<String>>,
    pub down: AtomicBool,
    pub jwks_hits: AtomicUsize,
    pub introspection_hits: AtomicUsize,
}

/// A fake authorization server on an ephemeral loopback port.
pub struct TestIssuer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
}

impl TestIssuer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> url::Url {
        url::Url::parse(&format!("{}{path}", self.base())).unwrap()
    }

    pub fn set_jwks(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    pub fn set_document(&self, path: &str, doc: Value) {
        self.state
            .documents
            .lock()
            .unwrap()
            .insert(path.to_owned(), doc);
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn reply(&self, token: &str, body: Value, delay: Duration) {
        self.state
            .introspection
            .lock()
            .unwrap()
            .insert(token.to_owned(), IntrospectionReply { body, delay });
    }

    /// Settings with a fixed `jwks_uri` (no discovery) and short test intervals.
    pub fn settings(&self, id: &str, issuer: &str) -> IssuerSettings {
        let mut s = IssuerSettings::new(id, issuer);
        s.algorithms = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
        s.jwks_uri = Some(self.url("/jwks"));
        s.leeway = Duration::from_secs(5);
        s.refresh_min_interval = Duration::from_millis(200);
        s.refresh_default = Duration::from_secs(60);
        s.refresh_max = Duration::from_secs(300);
        s.max_staleness = Duration::from_secs(3600);
        s
    }
}

async fn handle(
    state: Arc<ServerState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/jwks" {
        state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    }
    if state.down.load(Ordering::SeqCst) {
        return Ok(respond(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "down"}),
            None,
        ));
    }
    if path == "/jwks" {
        let body = state.jwks.lock().unwrap().clone();
        let cc = state.jwks_cache_control.lock().unwrap().clone();
        return Ok(respond(StatusCode::OK, body, cc));
    }
    if path == "/introspect" {
        return Ok(introspect(&state, req).await);
    }
    let doc = state.documents.lock().unwrap().get(&path).cloned();
    Ok(match doc {
        Some(doc) => respond(StatusCode::OK, doc, None),
        None => respond(StatusCode::NOT_FOUND, json!({}), None),
    })
}

async fn introspect(state: &ServerState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.introspection_hits.fetch_add(1, Ordering::SeqCst);
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    *state.introspection_auth.lock().unwrap() = auth;
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if form.get("token_type_hint").map(String::as_str) != Some("access_token") {
        return respond(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request"}),
            None,
        );
    }
    let token = form.get("token").cloned().unwrap_or_default();
    let reply = state.introspection.lock().unwrap().get(&token).cloned();
    let reply = reply.unwrap_or(IntrospectionReply {
        body: json!({"active": false}),
        delay: Duration::ZERO,
    });
    tokio::time::sleep(reply.delay).await;
    respond(StatusCode::OK, reply.body, None)
}

fn respond(
    status: StatusCode,
    body: Value,
    cache_control: Option<String>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(cc) = cache_control {
        builder = builder.header("cache-control", cc);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub fn route(issuers: Vec<usize>) -> RouteAuth {
    RouteAuth {
        route_id: "calendar".into(),
        issuers,
        audiences: vec![AUD.to_owned()],
        api_keys: vec![],
    }
}

pub fn authenticator(issuers: Vec<IssuerSettings>) -> Authenticator {
    Authenticator::new(issuers, &prometheus::Registry::new()).expect("authenticator")
}

pub async fn wait_ready(auth: &Authenticator) {
    for _ in 0..200 {
        if auth.ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("authenticator never became ready");
}

/// One issuer serving `keys`, started and ready.
pub async fn ready_issuer(keys: &[&TestKey]) -> (TestIssuer, Authenticator, String) {
    let server = TestIssuer::start().await;
    server.set_jwks(keys);
    let iss = format!("{}/realms/test", server.base());
    let auth = authenticator(vec![server.settings("test", &iss)]);
    auth.start();
    wait_ready(&auth).await;
    (server, auth, iss)
}
