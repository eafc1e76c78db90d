//! Per-issuer JWKS store: moka-held key sets, background refresh, rate-limited unknown-kid refetch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http::header::CACHE_CONTROL;
use moka::Expiry;
use tokio_util::sync::CancellationToken;

use super::discovery::{self, Metadata};
use super::error::FetchError;
use super::http::HttpFetcher;
use super::keys::{self, KeySet};
use super::metrics::AuthMetrics;
use super::settings::IssuerSettings;
use crate::clock::now_ms;

/// First retry delay after a failed load; doubles up to [`BACKOFF_CAP`].
const BACKOFF_START: Duration = Duration::from_millis(250);
/// Longest wait between retries while an issuer is down.
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Key sets of all issuers, keyed by issuer index. An entry expires `max_staleness` after the
/// last successful load, which is exactly "keep the last keys until they are too old".
pub(crate) type KeyCache = moka::sync::Cache<usize, Arc<KeySet>, foldhash::quality::RandomState>;

pub(crate) fn key_cache(issuers: usize) -> KeyCache {
    moka::sync::Cache::builder()
        .max_capacity(issuers.max(1) as u64)
        .expire_after(StalenessExpiry)
        .build_with_hasher(foldhash::quality::RandomState::default())
}

struct StalenessExpiry;

impl Expiry<usize, Arc<KeySet>> for StalenessExpiry {
    fn expire_after_create(&self, _: &usize, set: &Arc<KeySet>, _: Instant) -> Option<Duration> {
        set.max_staleness
    }

    fn expire_after_update(
        &self,
        _: &usize,
        set: &Arc<KeySet>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        // A successful reload restarts the staleness clock.
        set.max_staleness
    }
}

/// Where the keys of one issuer come from and what we last learnt about it.
pub(crate) struct IssuerKeys {
    idx: usize,
    pub settings: IssuerSettings,
    pub id: Arc<str>,
    cache: KeyCache,
    pub fetcher: HttpFetcher,
    metrics: AuthMetrics,
    /// Serialises loads (single flight) and remembers when the last one started.
    load_lock: tokio::sync::Mutex<Option<Instant>>,
    generation: AtomicU64,
    /// When the cached key set goes stale ([`now_ms`]), set no later than its cache entry
    /// expires: cached tokens check it instead of looking the set up (see [`Self::fresh_generation`]).
    fresh_until: AtomicU64,
    loaded_once: AtomicBool,
    metadata: RwLock<Option<Metadata>>,
    metadata_lock: tokio::sync::Mutex<Option<Instant>>,
}

impl IssuerKeys {
    pub(crate) fn new(
        idx: usize,
        settings: IssuerSettings,
        cache: KeyCache,
        fetcher: HttpFetcher,
        metrics: AuthMetrics,
    ) -> Self {
        let id: Arc<str> = settings.id.as_str().into();
        let this = Self {
            idx,
            settings,
            id,
            cache,
            fetcher,
            metrics,
            load_lock: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            fresh_until: AtomicU64::new(0),
            loaded_once: AtomicBool::new(false),
            metadata: RwLock::new(None),
            metadata_lock: tokio::sync::Mutex::new(None),
        };
        this.install_static_keys();
        this
    }

    fn install_static_keys(&self) {
        if let Some(set) = &self.settings.static_keys {
            let keys = keys::from_set(set);
            self.metrics.jwks_keys_loaded(&self.id, keys.len());
            self.cache
                .insert(self.idx, Arc::new(KeySet::new(keys, 1, None)));
            self.generation.store(1, Ordering::Release);
            self.fresh_until.store(u64::MAX, Ordering::Release);
            self.loaded_once.store(true, Ordering::Release);
        }
    }

    pub(crate) fn metrics(&self) -> &AuthMetrics {
        &self.metrics
    }

    pub(crate) fn is_static(&self) -> bool {
        self.settings.static_keys.is_some()
    }

    pub(crate) fn loaded_once(&self) -> bool {
        self.loaded_once.load(Ordering::Acquire)
    }

    /// Current keys, or `None` if never loaded or older than `max_staleness`.
    pub(crate) fn current(&self) -> Option<Arc<KeySet>> {
        self.cache.get(&self.idx)
    }

    /// The generation of the current key set while it is fresh, read without a cache lookup.
    /// A generation changes with every load, so a key found in a set of this generation is
    /// still in the current one. `None` when stale or never loaded.
    pub(crate) fn fresh_generation(&self) -> Option<u64> {
        (now_ms() < self.fresh_until.load(Ordering::Acquire))
            .then(|| self.generation.load(Ordering::Acquire))
    }

    /// Unknown kid: refetch once, shared by all concurrent callers, at most once per
    /// `refresh_min_interval` (a flood of random kids must not become a flood on the issuer).
    /// Returns the key set to retry with, if it changed since `seen_generation`.
    pub(crate) async fn refetch(&self, seen_generation: u64) -> Option<Arc<KeySet>> {
        if self.is_static() {
            return None;
        }
        let mut last = self.load_lock.lock().await;
        if self.generation.load(Ordering::Acquire) == seen_generation {
            let recent = last.is_some_and(|t| t.elapsed() < self.settings.refresh_min_interval);
            if recent {
                return None;
            }
            *last = Some(Instant::now());
            let _ = self.load(false).await;
        }
        drop(last);
        self.current()
            .filter(|set| set.generation != seen_generation)
    }

    /// One scheduled load; returns how long to wait before the next one.
    async fn scheduled_load(&self) -> Result<Duration, FetchError> {
        let mut last = self.load_lock.lock().await;
        *last = Some(Instant::now());
        self.load(true).await
    }

    /// Fetch the JWKS (discovering its URL if needed) and install it. Caller holds `load_lock`.
    async fn load(&self, rediscover: bool) -> Result<Duration, FetchError> {
        let result = self.load_inner(rediscover).await;
        match &result {
            Ok(_) => self.metrics.jwks_fetched(&self.id, true),
            Err(err) => {
                self.metrics.jwks_fetched(&self.id, false);
                tracing::warn!(issuer.id = %self.id, error = %err, "jwks load failed");
            }
        }
        result
    }

    async fn load_inner(&self, rediscover: bool) -> Result<Duration, FetchError> {
        let Some(uri) = self.jwks_uri(rediscover).await? else {
            // Metadata without jwks_uri: an introspection-only issuer. Nothing to load.
            self.loaded_once.store(true, Ordering::Release);
            return Ok(self.settings.refresh_default);
        };
        let fetched = self.fetcher.get(&uri).await?;
        let keys = keys::parse_jwks(&fetched.body)?;
        if keys.is_empty() {
            // Keep the previous keys: an empty set is far more likely an IdP mistake than a
            // deliberate revocation of every key, and dropping them would fail all requests.
            return Err(FetchError::NoUsableKeys);
        }
        self.install(keys);
        Ok(self.next_refresh(&fetched.headers))
    }

    fn install(&self, keys: Vec<keys::VerifyKey>) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let count = keys.len();
        let set = KeySet::new(keys, generation, Some(self.settings.max_staleness));
        // Taken before the insert, so the set is never taken for fresh after its entry expired.
        let staleness = u64::try_from(self.settings.max_staleness.as_millis()).unwrap_or(u64::MAX);
        let fresh_until = now_ms().saturating_add(staleness);
        self.cache.insert(self.idx, Arc::new(set));
        self.fresh_until.store(fresh_until, Ordering::Release);
        self.loaded_once.store(true, Ordering::Release);
        self.metrics.jwks_keys_loaded(&self.id, count);
        tracing::info!(issuer.id = %self.id, jwks.keys = count, "jwks loaded");
    }

    async fn jwks_uri(&self, rediscover: bool) -> Result<Option<url::Url>, FetchError> {
        if let Some(uri) = &self.settings.jwks_uri {
            return Ok(Some(uri.clone()));
        }
        if !rediscover && let Some(meta) = self.cached_metadata() {
            return Ok(meta.jwks_uri);
        }
        let meta = discovery::discover(&self.fetcher, &self.settings.issuer).await?;
        self.store_metadata(meta.clone());
        Ok(meta.jwks_uri)
    }

    /// RFC 9111 §5.2.2.1 max-age, clamped to the configured bounds.
    fn next_refresh(&self, headers: &HeaderMap) -> Duration {
        let s = &self.settings;
        max_age(headers).unwrap_or(s.refresh_default).clamp(
            s.refresh_min_interval,
            s.refresh_max.max(s.refresh_min_interval),
        )
    }

    fn cached_metadata(&self) -> Option<Metadata> {
        self.metadata.read().ok()?.clone()
    }

    fn store_metadata(&self, meta: Metadata) {
        if let Ok(mut slot) = self.metadata.write() {
            *slot = Some(meta);
        }
    }

    /// Raw metadata document, discovering it on first use (rate-limited like refetches).
    pub(crate) async fn metadata_document(&self) -> Option<Bytes> {
        if let Some(meta) = self.cached_metadata() {
            return Some(meta.raw);
        }
        if self.is_static() {
            return None;
        }
        let mut last = self.metadata_lock.lock().await;
        if let Some(meta) = self.cached_metadata() {
            return Some(meta.raw);
        }
        if last.is_some_and(|t| t.elapsed() < self.settings.refresh_min_interval) {
            return None;
        }
        *last = Some(Instant::now());
        match discovery::discover(&self.fetcher, &self.settings.issuer).await {
            Ok(meta) => {
                let raw = meta.raw.clone();
                self.store_metadata(meta);
                Some(raw)
            }
            Err(err) => {
                tracing::warn!(issuer.id = %self.id, error = %err, "metadata discovery failed");
                None
            }
        }
    }

    /// Background loader: load now, then on schedule; back off (capped) while the issuer is down.
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if self.is_static() {
            return;
        }
        let mut backoff = BACKOFF_START;
        loop {
            let wait = match self.scheduled_load().await {
                Ok(next) => {
                    backoff = BACKOFF_START;
                    next
                }
                Err(_) => {
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    wait
                }
            };
            if self.current().is_none() {
                self.metrics.jwks_keys_loaded(&self.id, 0);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// `max-age` from Cache-Control; `no-store`/`no-cache` mean "as soon as allowed".
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let directives = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for directive in directives {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            return secs.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    None
}

/// ±20 % so replicas that lost the issuer together do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    if getrandom::fill(&mut byte).is_err() {
        return base;
    }
    let factor = 0.8 + 0.4 * (f64::from(byte[0]) / 255.0);
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age(&headers("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&headers("max-age=abc")), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }
}
