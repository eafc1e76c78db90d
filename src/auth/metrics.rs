//! Authentication metrics, declared in one place; labels are issuer ids from config only.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Handles to the auth metrics. Cloning shares the underlying collectors.
///
/// Register once per process and reuse across config reloads
/// ([`crate::auth::Authenticator::with_metrics`]): Prometheus refuses a second registration.
#[derive(Clone, Debug)]
pub struct AuthMetrics {
    jwks_fetch: IntCounterVec,
    jwks_keys: IntGaugeVec,
    token_cache: IntCounterVec,
    /// `token_cache{result="hit"|"miss"}`, resolved once: looked up on every request.
    cache_hit: IntCounter,
    cache_miss: IntCounter,
    introspection_duration: HistogramVec,
    introspection_failures: IntCounterVec,
}

impl AuthMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let token_cache = IntCounterVec::new(
            Opts::new("mcpgate_token_cache_total", "Verified-token cache lookups"),
            &["result"],
        )?;
        let metrics = Self {
            cache_hit: token_cache.with_label_values(&["hit"]),
            cache_miss: token_cache.with_label_values(&["miss"]),
            token_cache,
            jwks_fetch: IntCounterVec::new(
                Opts::new(
                    "mcpgate_jwks_fetch_total",
                    "JWKS fetches by issuer and result",
                ),
                &["issuer", "result"],
            )?,
            jwks_keys: IntGaugeVec::new(
                Opts::new(
                    "mcpgate_jwks_keys",
                    "Usable signing keys currently held per issuer",
                ),
                &["issuer"],
            )?,
            introspection_duration: HistogramVec::new(
                HistogramOpts::new(
                    "mcpgate_introspection_duration_seconds",
                    "RFC 7662 introspection call latency",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["issuer"],
            )?,
            introspection_failures: IntCounterVec::new(
                Opts::new(
                    "mcpgate_introspection_failures_total",
                    "Introspection calls that failed (timeout, transport, status, body)",
                ),
                &["issuer"],
            )?,
        };
        registry.register(Box::new(metrics.jwks_fetch.clone()))?;
        registry.register(Box::new(metrics.jwks_keys.clone()))?;
        registry.register(Box::new(metrics.token_cache.clone()))?;
        registry.register(Box::new(metrics.introspection_duration.clone()))?;
        registry.register(Box::new(metrics.introspection_failures.clone()))?;
        Ok(metrics)
    }

    pub(crate) fn jwks_fetched(&self, issuer: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_fetch.with_label_values(&[issuer, result]).inc();
    }

    pub(crate) fn jwks_keys_loaded(&self, issuer: &str, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.jwks_keys.with_label_values(&[issuer]).set(count);
    }

    pub(crate) fn token_cache_hit(&self) {
        self.cache_hit.inc();
    }

    pub(crate) fn token_cache_miss(&self) {
        self.cache_miss.inc();
    }

    pub(crate) fn introspected(&self, issuer: &str, took: Duration) {
        self.introspection_duration
            .with_label_values(&[issuer])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn introspection_failed(&self, issuer: &str) {
        self.introspection_failures
            .with_label_values(&[issuer])
            .inc();
    }

    #[cfg(test)]
    pub(crate) fn jwks_fetch_count(&self, issuer: &str) -> u64 {
        ["success", "failure"]
            .iter()
            .map(|r| self.jwks_fetch.with_label_values(&[issuer, r]).get())
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn introspection_failures_count(&self, issuer: &str) -> u64 {
        self.introspection_failures
            .with_label_values(&[issuer])
            .get()
    }

    #[cfg(test)]
    pub(crate) fn token_cache_count(&self, result: &str) -> u64 {
        self.token_cache.with_label_values(&[result]).get()
    }
}
